"""The titles a live panel shows for the ids a workflow's progress names (api/work_items)."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from api import work_items
from api.work_items import describe
from models import Image, Task
from tests import builders


@pytest.fixture
def titles() -> work_items.TitleCache:
    """A fresh cache, as each app has its own (a test's database reuses ids)."""
    return work_items.TitleCache()


def test_each_kind_of_item_is_named_by_its_title_in_the_order_asked(engine, titles):
    acct, _ = builders.account(engine)
    site = builders.site(engine, acct)
    cluster, words = builders.cluster(engine, acct, site.id, "Espresso", ["espresso shots"])
    task, content = builders.task_with_content(engine, acct, site.id, "Pulling a Shot")
    with Session(engine, expire_on_commit=False) as session:
        featured = Image(account_id=acct, site_id=site.id, task_id=task.id, prompt="p")
        inline = Image(
            account_id=acct,
            site_id=site.id,
            task_id=task.id,
            prompt="q",
            image_type="in_article",
            position=2,
        )
        session.add_all([featured, inline])
        session.commit()
    items = describe(
        engine,
        titles,
        acct,
        [
            ("content", "task", task.id),
            ("clustering", "keyword", words[0].id),
            ("ideas", "cluster", cluster.id),
            ("images", "content", content.id),
            ("images", "image", inline.id),
            ("images", "image", featured.id),
        ],
    )
    assert [(i.stage, i.kind, i.title) for i in items] == [
        ("content", "task", "Pulling a Shot"),
        ("clustering", "keyword", "espresso shots"),
        ("ideas", "cluster", "Espresso"),
        ("images", "content", "Pulling a Shot"),
        ("images", "image", "In-article image 2 for “Pulling a Shot”"),
        ("images", "image", "Featured image for “Pulling a Shot”"),
    ]


def test_another_accounts_items_and_unknown_ids_are_left_out(engine, titles):
    mine, _ = builders.account(engine)
    theirs, _ = builders.account(engine)
    my_site = builders.site(engine, mine)
    their_site = builders.site(engine, theirs)
    my_task, _ = builders.task_with_content(engine, mine, my_site.id, "Mine")
    their_task, _ = builders.task_with_content(engine, theirs, their_site.id, "Secret plan")
    wanted = [("content", "task", their_task.id), ("content", "task", my_task.id)]
    wanted.append(("content", "task", 10**9))
    assert [i.title for i in describe(engine, titles, mine, wanted)] == ["Mine"]
    # cached per account: the owner still sees its own title, the other account never does
    assert [i.title for i in describe(engine, titles, theirs, wanted)] == ["Secret plan"]
    assert [i.title for i in describe(engine, titles, mine, wanted)] == ["Mine"]


def test_the_title_cache_stays_bounded(engine):
    titles = work_items.TitleCache(size=3)
    acct, _ = builders.account(engine)
    site = builders.site(engine, acct)
    tasks = [builders.task_with_content(engine, acct, site.id, f"T{n}")[0] for n in range(5)]
    items = describe(engine, titles, acct, [("content", "task", t.id) for t in tasks])
    assert [i.title for i in items] == ["T0", "T1", "T2", "T3", "T4"]
    assert len(titles) == 3


def test_a_cached_title_is_read_again_after_its_time(engine, titles):
    acct, _ = builders.account(engine)
    site = builders.site(engine, acct)
    task, _ = builders.task_with_content(engine, acct, site.id, "Old title")
    wanted = [("content", "task", task.id)]
    assert [i.title for i in describe(engine, titles, acct, wanted)] == ["Old title"]
    with engine.begin() as conn:
        conn.execute(Task.__table__.update().values(title="New title"))
    assert [i.title for i in describe(engine, titles, acct, wanted)] == ["Old title"]  # cached
    later = titles.clock() + titles.ttl_s + 1
    titles.clock = lambda: later
    assert [i.title for i in describe(engine, titles, acct, wanted)] == ["New title"]


async def test_a_run_is_only_final_once_its_row_is(engine):
    """The workflow decides its outcome a moment before its last activity writes the row
    and frees the site: in that window a snapshot must not say "completed" (a client that
    starts the next run on seeing it would get a 409)."""
    from decimal import Decimal
    from types import SimpleNamespace

    from sqlalchemy import update

    from api.routes.automation import run_snapshot
    from api.work_items import TitleCache
    from domain.ledger import Ledger
    from models import AutomationRun
    from tests import review_builders
    from workflows.automation_run import RunProgress

    acct, _ = builders.account(engine, credits=10)
    site = builders.site(engine, acct)
    run = review_builders.automation_run(engine, acct, site.id)
    table = AutomationRun.__table__
    with engine.begin() as conn:  # the row as the workflow left it while running
        conn.execute(update(table).where(table.c.run_id == run.run_id).values(status="running"))
    answer = RunProgress(
        run_id=run.run_id,
        site_id=site.id,
        status="completed",  # decided, the row not yet written
        pause_reason=None,
        current_stage=None,
        stages=[],
        credits_used=3,
        cost_usd=Decimal("0.03"),
        balance=None,
        budget_credits=None,
    )

    async def query(*_args, **_kwargs):  # as the SDK's, e.g. reject_condition=NOT_OPEN
        return answer

    client = SimpleNamespace(get_workflow_handle_for=lambda *_a: SimpleNamespace(query=query))
    args = (client, engine, Ledger(engine), run.run_id, acct, TitleCache())
    snap = await run_snapshot(*args)
    assert (snap.status, snap.credits_used) == ("running", 3)
    with engine.begin() as conn:  # the last activity wrote the row: now it is over
        conn.execute(
            update(table)
            .where(table.c.run_id == run.run_id)
            .values(status="completed", finished_at=table.c.started_at)
        )
    assert (await run_snapshot(*args)).status == "completed"
