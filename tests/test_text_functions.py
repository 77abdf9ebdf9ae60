"""The pipeline's text AI functions (auto_cluster, generate_ideas, generate_content):
prompt builders and title rules on their own, each function's writer on both databases,
and each function end to end through TextBatchWorkflow on the real dev server with the
simulator over HTTP: the rows written, one charge per item, reconcile, re-runs that write
and charge nothing, and a malformed item failing alone."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from temporalio import activity
from temporalio.worker import Worker

from activities.text import TextActivities, TextCallInput, TextCallOutput, WithdrawTextInput
from activities.text_functions import (
    TEXT_FUNCTIONS,
    ItemGone,
    TextItem,
    relevant_titles,
    unclustered_keywords,
)
from domain.ai_schemas import CONTENT_STRUCTURES, SCHEMAS
from domain.prompts import (
    ArticleBrief,
    SiteContext,
    cluster_prompt,
    content_prompt,
    ideas_prompt,
    text_of,
)
from domain.reconcile import reconcile
from domain.titles import clip_words, normalise_title, slugify, unique_slug
from models import AICall, CreditTransaction, CreditUsageLog, Notification
from models.pipeline import Cluster, Content, ContentIdea, Keyword, Task
from providers.registry import ProviderRegistry
from simulator.prompts import parse_sections, section_keywords
from simulator.textgen import generate
from tests import builders
from tests.temporal_fixtures import WorkerCtx
from worker import build_activities, build_gate
from workflows.client import start_text_batch
from workflows.text_batch import TextBatchWorkflow

SITE = SiteContext(name="Brew Lab", url="https://brew.example", sector="Coffee")
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def rows(engine: Engine, model: Any, *where: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(model.__table__).where(*where)).all())


def write(engine: Engine, function: str, item: TextItem, data: dict[str, Any]) -> dict[str, Any]:
    with engine.begin() as conn:
        return TEXT_FUNCTIONS[function].write(conn, item, data)


def withdraw(engine: Engine, function: str, item: TextItem) -> None:
    with engine.begin() as conn:
        TEXT_FUNCTIONS[function].withdraw(conn, item)


def answer_to(engine: Engine, function: str, item: TextItem) -> dict[str, Any]:
    """What the simulator answers for the item's prompt as it would be built now."""
    with engine.connect() as conn:
        call = TEXT_FUNCTIONS[function].load(conn, item)
    return generate(call.schema_name, call.prompt.system, call.prompt.user, call.schema)


# =========================================================================== titles


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("The Best Café Grinders", "best cafe grinders!"),
        ("Cold-Brew: A Guide", "cold brew a guide"),
        ("A Guide to Tea & Cake", "guide to tea and cake"),
        ("  Don't   Rush   Espresso ", "Dont rush espresso"),
        ("An Ode to Crème Brûlée", "ode to creme brulee"),
        ("Pour-Over vs. French Press", "Pour over vs French press"),
    ],
)
def test_titles_that_read_the_same_normalise_the_same(a: str, b: str):
    assert normalise_title(a) == normalise_title(b) != ""


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Cold Brew Ratio", "Cold Brew Concentrate"),
        ("The Complete Guide to Tea", "A Step-by-Step Plan for Tea"),
        ("Top 10 Grinders", "Top 12 Grinders"),
    ],
)
def test_different_titles_stay_different(a: str, b: str):
    assert normalise_title(a) != normalise_title(b)


def test_normalising_keeps_a_title_that_is_only_an_article():
    assert normalise_title("The") == "the"
    assert normalise_title("A Theme for the Ages") == "theme for the ages"  # only a lead word


def test_slugs_are_lowercase_words_and_hyphens_cut_at_a_hyphen():
    assert slugify("Crème Brûlée: 10 Tips & Tricks!") == "creme-brulee-10-tips-and-tricks"
    long = slugify("word " * 40, max_length=30)
    assert SLUG.fullmatch(long) and len(long) <= 30 and long.endswith("word")
    assert slugify("!!!") == ""


def test_unique_slug_suffixes_the_first_free_number():
    assert unique_slug("cold-brew", set()) == "cold-brew"
    assert unique_slug("cold-brew", {"cold-brew", "cold-brew-2"}) == "cold-brew-3"
    assert unique_slug("x" * 80, {"x" * 80}) == "x" * 78 + "-2"


def test_clip_words_cuts_at_a_word_without_dangling_punctuation():
    text = "Cold brew at home: the ratio, the grind, and the steeping time explained"
    clipped = clip_words(text, 40)
    assert clipped == "Cold brew at home: the ratio, the grind" and len(clipped) <= 40
    assert clip_words("short  text ", 60) == "short text"
    assert clip_words("x" * 70, 60) == "x" * 60


def test_relevant_titles_put_the_topic_first_then_the_newest():
    titles = [(1, "Tea Basics"), (2, "Cold Brew Ratio Guide"), (3, "Latte Art"), (4, "tea basics")]
    assert relevant_titles(titles, ["Cold Brew", "cold brew ratio"], 2) == [
        "Cold Brew Ratio Guide",
        "tea basics",
    ]


# =========================================================================== prompts


def test_cluster_prompt_lists_every_keyword_with_site_context_and_intent_rules():
    keywords = ["best coffee grinder", "how to make cold brew", "buy\nespresso beans"]
    prompt = cluster_prompt(SITE, keywords)
    sections = parse_sections(prompt.user)
    assert sections["SITE"] == ["Brew Lab"] and sections["SECTOR"] == ["Coffee"]
    assert section_keywords(sections) == ["best coffee grinder", "how to make cold brew",
                                          "buy espresso beans"]  # fmt: skip
    assert sections["KEYWORD_COUNT"] == ["3"]
    for rule in ("informational", "commercial", "transactional", "navigational", "exactly one"):
        assert rule in prompt.system


def test_ideas_prompt_carries_the_cluster_and_the_titles_to_avoid():
    prompt = ideas_prompt(
        SITE, "Cold Brew", "How-tos", ["cold brew ratio", "cold brew concentrate"],
        ["The Complete Guide to Cold Brew"],
    )  # fmt: skip
    sections = parse_sections(prompt.user)
    assert sections["CLUSTER"] == ["Cold Brew"] and sections["CLUSTER_DESCRIPTION"] == ["How-tos"]
    assert section_keywords(sections) == ["cold brew ratio", "cold brew concentrate"]
    assert section_keywords(sections, "EXISTING_TITLES") == ["The Complete Guide to Cold Brew"]
    assert "2 or 3" in prompt.system and "EXISTING_TITLES" in prompt.system
    assert "Sections:" in prompt.system  # the outline the writer gets
    empty = parse_sections(ideas_prompt(SITE, "Tea", "", ["tea"], []).user)
    assert section_keywords(empty, "EXISTING_TITLES") == ["(none)"]


def test_content_prompt_is_a_full_seo_brief():
    brief = ArticleBrief(
        title="How to Make Cold Brew",
        focus_keyword="how to make cold brew",
        target_keywords=["how to make cold brew", "cold brew ratio"],
        secondary_keywords=["cold brew concentrate"],
        outline="A practical guide.\nSections:\nWhat You Need\nFAQ: Common Questions",
        content_structure="how_to",
    )
    prompt = content_prompt(SITE, brief)
    sections = parse_sections(prompt.user)
    for label, value in [
        ("TITLE", "How to Make Cold Brew"),
        ("FOCUS_KEYWORD", "how to make cold brew"),
        ("CONTENT_STRUCTURE", "how_to"),
        ("WORDS", "900-1400"),
        ("SITE", "Brew Lab"),
    ]:
        assert sections[label] == [value], label
    assert "Coffee" in sections["AUDIENCE"][0] and sections["TONE"]
    assert section_keywords(sections) == ["how to make cold brew", "cold brew ratio"]
    assert section_keywords(sections, "SECONDARY_KEYWORDS") == ["cold brew concentrate"]
    # An outline line that looks like a label stays inside the outline.
    assert "FAQ" not in sections and "- FAQ: Common Questions" in prompt.user
    for rule in ("first 100 words", "60 characters", "160 characters", "slug", "<h2>", "FAQ"):
        assert rule in prompt.system, rule


def test_every_text_function_is_registered_with_its_schema():
    assert set(TEXT_FUNCTIONS) == set(SCHEMAS)
    assert set(SCHEMAS["generate_content"]["required"]) == {
        "title", "meta_title", "meta_description", "slug", "focus_keyword",
        "target_keywords", "html", "word_count",
    }  # fmt: skip


# =========================================================================== writers


def test_auto_cluster_writes_each_member_once_and_withdraws(engine: Engine):
    acct, _ = builders.account(engine, credits=0)
    site = builders.site(engine, acct)
    words = ["burr grinder", "grinder reviews", "cold brew", "taken already", "forgotten one"]
    kws = {k.keyword: k for k in builders.keywords(engine, acct, site.id, words)}
    other, _ = builders.cluster(engine, acct, site.id, "Other", ["other topic"])
    with engine.begin() as conn:  # clustered by another run meanwhile
        conn.execute(
            update(Keyword.__table__)
            .where(Keyword.__table__.c.id == kws["taken already"].id)
            .values(cluster_id=other.id)
        )
    item = TextItem(acct, 1, "wf-1", tuple(k.id for k in kws.values()))
    answer = {
        "clusters": [
            {"name": "Grinders", "intent": "commercial", "description": "Choosing a grinder.",
             "keywords": ["Burr Grinder", "grinder reviews", "not ours", "taken already"]},
            {"name": "Cold Brew", "intent": "informational", "description": "Brewing cold.",
             "keywords": ["cold brew", "burr grinder"]},  # a repeat: first cluster keeps it
            {"name": "Nothing", "intent": "informational", "description": "x", "keywords": []},
        ]
    }  # fmt: skip
    first = write(engine, "auto_cluster", item, answer)
    again = write(engine, "auto_cluster", item, answer)  # a retried write: same rows
    assert again == first and len(first["cluster_ids"]) == 2
    clusters = {c.id: c for c in rows(engine, Cluster, Cluster.source_key.like("wf-1:%"))}
    assert sorted(clusters) == sorted(first["cluster_ids"])
    grinders, brew = (clusters[i] for i in first["cluster_ids"])
    assert (grinders.keywords_count, brew.keywords_count) == (2, 1)
    assert grinders.description == "Commercial intent: Choosing a grinder."
    assert [c.source_key for c in (grinders, brew)] == ["wf-1:kb:1:0", "wf-1:kb:1:1"]
    by_word = {k.keyword: k for k in rows(engine, Keyword)}
    assert by_word["burr grinder"].cluster_id == grinders.id
    assert by_word["cold brew"].cluster_id == brew.id
    assert by_word["taken already"].cluster_id == other.id  # left alone
    assert by_word["forgotten one"].cluster_id is None  # the answer forgot it
    with engine.connect() as conn:
        assert unclustered_keywords(conn, site.id) == [kws["forgotten one"].id]

    withdraw(engine, "auto_cluster", item)
    assert rows(engine, Cluster, Cluster.source_key.like("wf-1:%")) == []
    with engine.connect() as conn:
        assert len(unclustered_keywords(conn, site.id)) == 4
        assert unclustered_keywords(conn, site.id, limit=2) == sorted(
            kws[w].id for w in ("burr grinder", "grinder reviews")
        )


def test_auto_cluster_batch_with_nothing_left_is_gone(engine: Engine):
    acct, _ = builders.account(engine, credits=0)
    site = builders.site(engine, acct)
    _, members = builders.cluster(engine, acct, site.id, "Done", ["a b", "a c"])
    with engine.connect() as conn, pytest.raises(ItemGone):
        TEXT_FUNCTIONS["auto_cluster"].load(conn, TextItem(acct, 1, "wf", (members[0].id,)))


def test_ideas_skip_titles_the_site_has_and_repeats_then_withdraw(engine: Engine):
    acct, _ = builders.account(engine, credits=0)
    site = builders.site(engine, acct)
    cluster, _ = builders.cluster(
        engine, acct, site.id, "Cold Brew", ["cold brew", "cold brew ratio"]
    )
    builders.task_with_content(engine, acct, site.id, "The Best Café Grinders")
    builders.writer_task(engine, acct, site.id, "The Complete Guide to Cold Brew", ["cold brew"])
    idea = {"description": "Angle.\nSections:\nOne", "content_type": "post",
            "content_structure": "guide", "target_keywords": ["Cold Brew Ratio", "invented"]}  # fmt: skip
    answer = {
        "ideas": [
            {**idea, "title": "Complete guide to cold-brew!"},  # an existing idea's title
            {**idea, "title": "best cafe grinders"},  # an existing article's title
            {**idea, "title": "Cold Brew Ratio, Explained"},
            {**idea, "title": "cold brew ratio explained", "content_structure": "poem"},
            {**idea, "title": "Cold Brew for Beginners", "target_keywords": ["invented"]},
        ]
    }
    item = TextItem(acct, cluster.id, "wf-2")
    result = write(engine, "generate_ideas", item, answer)
    ideas = {i.id: i for i in rows(engine, ContentIdea, ContentIdea.cluster_id == cluster.id)}
    assert sorted(ideas) == sorted(result["idea_ids"]) and len(ideas) == 2
    ratio, beginners = (ideas[i] for i in result["idea_ids"])
    assert ratio.title == "Cold Brew Ratio, Explained" and ratio.source_key == "wf-2:cluster:1:2"
    assert ratio.target_keywords == ["cold brew ratio"]  # only the cluster's keywords
    assert beginners.target_keywords == ["cold brew"]  # none of its own: the cluster's first
    assert rows(engine, Cluster, Cluster.id == cluster.id)[0].status == "ideas_generated"
    titles = [normalise_title(i.title) for i in rows(engine, ContentIdea)]
    assert len(titles) == len(set(titles))

    with engine.begin() as conn:  # as if that write had not been seen: the same rows again
        conn.execute(
            update(Cluster.__table__)
            .where(Cluster.__table__.c.id == cluster.id)
            .values(status="new")
        )
    assert write(engine, "generate_ideas", item, answer) == result
    assert len(rows(engine, ContentIdea, ContentIdea.cluster_id == cluster.id)) == 2

    withdraw(engine, "generate_ideas", item)
    assert rows(engine, ContentIdea, ContentIdea.cluster_id == cluster.id) == []
    assert rows(engine, Cluster, Cluster.id == cluster.id)[0].status == "new"


def test_content_enforces_limits_and_a_unique_slug_then_withdraws(engine: Engine):
    acct, _ = builders.account(engine, credits=0)
    site = builders.site(engine, acct)
    first = builders.writer_task(engine, acct, site.id, "Cold Brew at Home", ["cold brew"])
    second = builders.writer_task(engine, acct, site.id, "Cold Brew Ratios", ["cold brew"])
    html = "<p>Cold brew is easy.</p><h2>Cold Brew &amp; You</h2><ul><li>Grind coarse</li></ul>"
    answer = {
        "title": "cold brew at home",
        "meta_title": "Cold Brew at Home: The Complete, Practical Guide to Brewing It Right",
        "meta_description": "Cold brew " + "made simple and tasty " * 10,
        "slug": "Cold Brew!",
        "focus_keyword": "cold brew",
        "target_keywords": ["cold brew", "Cold Brew", "cold brew ratio"],
        "html": html,
        "word_count": 999,
    }
    one = write(engine, "generate_content", TextItem(acct, first.id, "wf-3"), answer)
    two = write(engine, "generate_content", TextItem(acct, second.id, "wf-3"), answer)
    by_id = {c.id: c for c in rows(engine, Content)}
    a, b = by_id[one["content_id"]], by_id[two["content_id"]]
    assert (a.slug, b.slug) == ("cold-brew", "cold-brew-2")
    assert a.title == "cold brew at home" and b.title == "Cold Brew Ratios"  # never retitled
    assert a.meta_title == "Cold Brew at Home: The Complete, Practical Guide to Brewing"
    assert len(a.meta_title) <= 60 and len(a.meta_description) <= 160
    assert a.meta_description.startswith("Cold brew made simple")
    assert not a.meta_description.endswith(" ")
    assert a.word_count == len(text_of(html).split()) == 10  # not the answer's 999
    assert a.target_keywords == ["cold brew"]  # the task's; the answer's extra was not asked
    assert (a.focus_keyword, a.status, a.site_status) == ("cold brew", "draft", "not_published")
    assert {t.status for t in rows(engine, Task)} == {"done"}
    with pytest.raises(ItemGone):  # one article per task, whoever asks again
        write(engine, "generate_content", TextItem(acct, first.id, "wf-4"), answer)

    withdraw(engine, "generate_content", TextItem(acct, first.id, "wf-3"))
    assert [c.id for c in rows(engine, Content)] == [b.id]
    assert rows(engine, Task, Task.id == first.id)[0].status == "queued"


# =========================================================================== end to end


async def run_batch(
    ctx: WorkerCtx,
    acct: int,
    function: str,
    item_ids: list[int],
    queue: str | None = None,
    site_id: int | None = None,
) -> Any:
    """A stand-alone batch; a keyword batch names its site (its numbers name no row)."""
    handle = await start_text_batch(
        ctx.client,
        queue or ctx.task_queue,
        account_id=acct,
        function_name=function,
        item_ids=item_ids,
        site_id=site_id,
    )
    return await handle.result()


def assert_metered(engine: Engine, acct: int, operation: str, item_ids: set[int]) -> None:
    """One usage log and one deduction per item, with tokens and cost; the books balance."""
    usage = rows(engine, CreditUsageLog, CreditUsageLog.account_id == acct)
    deductions = rows(
        engine,
        CreditTransaction,
        CreditTransaction.account_id == acct,
        CreditTransaction.transaction_type == "deduction",
    )
    assert sorted(u.related_object_id for u in usage) == sorted(item_ids)
    assert len(deductions) == len(item_ids)
    for u in usage:
        assert u.operation_type == operation and u.tokens_input > 0 and u.tokens_output > 0
        assert u.credits_used > 0 and u.cost_usd > 0
    assert sorted(-d.amount for d in deductions) == sorted(u.credits_used for u in usage)
    assert reconcile(engine) == []


def setup_account(ctx: WorkerCtx, credits: int = 2000) -> tuple[int, int]:
    builders.billing_config(ctx.engine, "0.01")
    cfg = builders.text_model_config(ctx.engine)
    acct, _ = builders.account(ctx.engine, credits=credits)
    site = builders.site(ctx.engine, acct, text_model=cfg.model_name)
    return acct, site.id


@asynccontextmanager
async def keyword_batch_worker(ctx: WorkerCtx, batches: dict[int, list[int]]) -> AsyncIterator[str]:
    """A worker whose text activities get each keyword batch's members, as the automation
    run hands them over: TextBatchWorkflow carries item ids only. Everything else is the
    real worker's (workflow, ledger, logging, the text activity itself)."""
    queue = f"{ctx.task_queue}-kb"
    providers = ProviderRegistry.from_settings(ctx.settings)
    with ThreadPoolExecutor(max_workers=16) as executor:
        gate = build_gate(ctx.engine, executor)
        text = TextActivities(ctx.engine, providers, gate, executor)

        @activity.defn(name="generate_text")
        async def generate_text(inp: TextCallInput) -> TextCallOutput:
            return await text.generate_text(
                inp.model_copy(update={"members": batches[inp.item_id]})
            )

        @activity.defn(name="withdraw_text")
        def withdraw_text(inp: WithdrawTextInput) -> None:
            text.withdraw_text(inp.model_copy(update={"members": batches[inp.item_id]}))

        real = build_activities(ctx.settings, ctx.engine, providers, executor, gate)
        keep = [a for a in real if a.__name__ not in ("generate_text", "withdraw_text")]
        worker = Worker(
            ctx.client,
            task_queue=queue,
            workflows=[TextBatchWorkflow],
            activities=[*keep, generate_text, withdraw_text],
            activity_executor=executor,
        )
        async with worker:
            yield queue
        await gate.close()
    await providers.aclose()


KEYWORDS = [
    "best coffee grinder", "coffee grinder reviews", "burr coffee grinder",
    "how to make cold brew", "cold brew ratio", "cold brew concentrate",
    "espresso machine for home", "best espresso machines", "french press coffee",
    "how to clean a french press", "pour over kettle", "[malformed] mystery beans",
]  # fmt: skip


async def test_auto_cluster_end_to_end(wctx: WorkerCtx):
    engine = wctx.engine
    acct, site_id = setup_account(wctx)
    ids = {k.keyword: k.id for k in builders.keywords(engine, acct, site_id, KEYWORDS)}
    with engine.connect() as conn:
        pending = unclustered_keywords(conn, site_id)
    batches = {1: pending[:6], 2: pending[6:11], 3: pending[11:]}  # 3 holds the malformed one
    async with keyword_batch_worker(wctx, batches) as queue:
        result = await run_batch(wctx, acct, "auto_cluster", [1, 2, 3], queue, site_id)
        assert (result.items_total, result.items_done, result.items_failed) == (3, 2, 1)
        assert any("malformed answer 3 times" in e for e in result.errors), result.errors

        keywords = rows(engine, Keyword, Keyword.site_id == site_id)
        clusters = {c.id: c for c in rows(engine, Cluster, Cluster.site_id == site_id)}
        clustered = [k for k in keywords if k.cluster_id is not None]
        assert sorted(k.id for k in clustered) == sorted(pending[:11])  # each once (one column)
        assert all(k.status == "clustered" and k.cluster_id in clusters for k in clustered)
        for cluster in clusters.values():
            members = [k for k in clustered if k.cluster_id == cluster.id]
            assert cluster.keywords_count == len(members) > 0 and cluster.name
            assert cluster.description and cluster.status == "new"
        by_name = {c.name: c.id for c in clusters.values()}
        assert {k.id for k in clustered if k.cluster_id == by_name["Cold Brew"]} == {
            ids["how to make cold brew"],
            ids["cold brew ratio"],
            ids["cold brew concentrate"],
        }
        calls = {c.item_id: c for c in rows(engine, AICall) if c.status == "done"}
        assert sorted(cid for c in calls.values() for cid in c.details["cluster_ids"]) == sorted(
            clusters
        )
        assert_metered(engine, acct, "clustering", {1, 2})
        with engine.connect() as conn:
            assert unclustered_keywords(conn, site_id) == [ids["[malformed] mystery beans"]]

        balance = builders.balance(engine, acct)
        again = await run_batch(wctx, acct, "auto_cluster", [1, 2], queue, site_id)
        assert (again.items_done, again.items_failed, again.credits_used) == (0, 2, 0)
        assert all("no unclustered keywords" in e for e in again.errors), again.errors
    assert builders.balance(engine, acct) == balance
    assert len(rows(engine, Cluster)) == len(clusters)
    assert_metered(engine, acct, "clustering", {1, 2})
    notes = [n.notification_type for n in rows(engine, Notification)]
    assert notes == ["ai_cluster_success", "ai_cluster_failed"]


async def test_generate_ideas_end_to_end(wctx: WorkerCtx):
    engine = wctx.engine
    acct, site_id = setup_account(wctx)
    words = {
        "Cold Brew": ["cold brew", "cold brew ratio", "how to make cold brew"],
        "Coffee Grinders": ["best coffee grinder", "burr coffee grinder"],
        "[malformed] Beans": ["mystery beans", "odd beans"],
    }
    made = {n: builders.cluster(engine, acct, site_id, n, w)[0] for n, w in words.items()}
    first_ids = [c.id for c in made.values()]
    result = await run_batch(wctx, acct, "generate_ideas", first_ids)
    assert (result.items_total, result.items_done, result.items_failed) == (3, 2, 1)

    good = [made["Cold Brew"].id, made["Coffee Grinders"].id]
    for cluster_id in good:
        ideas = rows(engine, ContentIdea, ContentIdea.cluster_id == cluster_id)
        cluster_words = {k.keyword for k in rows(engine, Keyword, Keyword.cluster_id == cluster_id)}
        assert 2 <= len(ideas) <= 3
        for idea in ideas:
            assert idea.target_keywords and set(idea.target_keywords) <= cluster_words
            assert idea.content_type == "post" and idea.content_structure in CONTENT_STRUCTURES
            assert "Sections:" in idea.description and idea.status == "new"
    statuses = {c.id: c.status for c in rows(engine, Cluster)}
    assert [statuses[i] for i in good] == ["ideas_generated"] * 2
    assert statuses[made["[malformed] Beans"].id] == "new"
    assert_metered(engine, acct, "idea_generation", set(good))

    # A later cluster whose lead keyword is the same topic spelled differently: its first
    # idea repeats an existing title (normalised) and is skipped; the rest are written.
    late, _ = builders.cluster(engine, acct, site_id, "Cold-Brew Basics", ["cold-brew", "iced"])
    answered = answer_to(engine, "generate_ideas", TextItem(acct, late.id, "probe"))["ideas"]
    existing = {normalise_title(i.title) for i in rows(engine, ContentIdea)}
    assert normalise_title(answered[0]["title"]) in existing  # the simulator repeats it
    second = await run_batch(wctx, acct, "generate_ideas", [*good, late.id])
    assert (second.items_total, second.items_done) == (1, 1)  # done clusters left out
    late_ideas = rows(engine, ContentIdea, ContentIdea.cluster_id == late.id)
    assert 0 < len(late_ideas) == len(answered) - 1
    titles = [normalise_title(i.title) for i in rows(engine, ContentIdea)]
    assert len(titles) == len(set(titles))
    assert_metered(engine, acct, "idea_generation", {*good, late.id})

    balance, count = builders.balance(engine, acct), len(titles)
    rerun = await run_batch(wctx, acct, "generate_ideas", [*good, late.id])
    assert (rerun.items_total, rerun.credits_used) == (0, 0)
    assert builders.balance(engine, acct) == balance and len(rows(engine, ContentIdea)) == count


async def test_generate_content_end_to_end(wctx: WorkerCtx):
    engine = wctx.engine
    acct, site_id = setup_account(wctx)
    cluster, _ = builders.cluster(
        engine, acct, site_id, "Cold Brew", ["cold brew", "cold brew ratio", "iced coffee"]
    )
    outline = "A practical guide.\nSections:\nWhat You Need\nThe Right Ratio\nStoring It"
    specs = [
        ("Cold Brew at Home", ["cold brew", "cold brew ratio"]),
        ("Cold Brew for Beginners", ["cold brew"]),  # the same focus: the slug gets -2
        ("How to Make Cold Brew Concentrate", ["how to make cold brew concentrate"]),
        ("[malformed] Cold Brew Myths", ["cold brew myths"]),
    ]
    tasks = [
        builders.writer_task(engine, acct, site_id, t, w, outline, cluster.id) for t, w in specs
    ]
    result = await run_batch(wctx, acct, "generate_content", [t.id for t in tasks])
    assert (result.items_total, result.items_done, result.items_failed) == (4, 3, 1)

    good = tasks[:3]
    articles = {c.task_id: c for c in rows(engine, Content)}
    assert sorted(articles) == sorted(t.id for t in good)
    for task in good:
        article = articles[task.id]
        text = text_of(article.html)
        assert article.word_count == len(text.split()) and 900 <= article.word_count <= 1400
        assert 0 < len(article.meta_title) <= 60
        assert 0 < len(article.meta_description) <= 160
        assert article.focus_keyword == task.keywords[0]
        assert article.focus_keyword.lower() in article.meta_description.lower()
        assert article.focus_keyword in " ".join(text.split()[:100])
        assert set(task.keywords) <= set(article.target_keywords)
        assert SLUG.fullmatch(article.slug) and article.html.count("<h2>") >= 4
        assert "<ul>" in article.html or "<ol>" in article.html
        assert (article.status, article.title) == ("draft", task.title)
    slugs = [a.slug for a in articles.values()]
    assert len(slugs) == len(set(slugs)) and {"cold-brew", "cold-brew-2"} <= set(slugs)
    statuses = {t.id: t.status for t in rows(engine, Task)}
    assert [statuses[t.id] for t in tasks] == ["done", "done", "done", "queued"]
    assert_metered(engine, acct, "content_generation", {t.id for t in good})

    balance = builders.balance(engine, acct)
    rerun = await run_batch(wctx, acct, "generate_content", [t.id for t in good])
    assert (rerun.items_total, rerun.credits_used) == (0, 0)
    assert builders.balance(engine, acct) == balance and len(rows(engine, Content)) == 3
