"""Automation runs end to end: the API → the dev server → the worker → the simulator over
HTTP → both databases. The plan's "AI Functions Test Suite" and "Credit System
Verification" checklists, as tests."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select, text

from api.deps import get_engine, get_settings_dep, get_temporal
from api.main import create_app
from api.run_events import RunEvents
from domain import pg_notify, progress_feed
from domain.reconcile import reconcile
from domain.titles import normalise_title
from models import (
    AITaskLog,
    Content,
    ContentIdea,
    CreditTransaction,
    CreditUsageLog,
    Image,
    Keyword,
    Notification,
)
from tests import builders
from tests.sim_fixture import KEYWORDS
from tests.temporal_fixtures import WorkerCtx
from tests.test_api_images import api_client

pytestmark = pytest.mark.temporal
FINAL = {"completed", "cancelled", "failed"}
STAGE_FUNCTIONS = {
    "clustering": ("auto_cluster", "clustering", "ai_cluster_success"),
    "ideas": ("generate_ideas", "idea_generation", "ai_ideas_success"),
    "content": ("generate_content", "content_generation", "ai_content_success"),
    "image_prompts": ("generate_image_prompts", "image_prompt_extraction", "ai_image_prompts_success"),
}  # fmt: skip


def seeded_site(wctx: WorkerCtx, credits: int, keywords: list[str] = KEYWORDS, **site):
    engine = wctx.engine
    builders.billing_config(engine, "0.01")
    text = builders.text_model_config(engine, max_concurrency=8)
    image = builders.model_config(engine, model_name="img", credits_per_image=2, max_concurrency=8)
    acct, key = builders.account(engine, credits=credits)
    row = builders.site(
        engine,
        acct,
        max_in_article_images=1,
        text_model=text.model_name,
        image_model=image.model_name,
        **site,
    )
    builders.keywords(engine, acct, row.id, keywords)
    return acct, {"Authorization": f"Bearer {key}"}, row.id


def rows(engine, model, *where):
    with engine.connect() as conn:
        return conn.execute(select(model.__table__).where(*where)).all()


async def run_to_end(api: httpx.AsyncClient, headers: dict, site_id: int, **body) -> dict:
    started = await api.post("/automation/runs", json={"site_id": site_id, **body}, headers=headers)
    assert started.status_code == 202, started.text
    return await watch(api, headers, started.json()["run_id"], lambda p: p["status"] in FINAL)


async def paused_notes(engine, timeout_s: float = 30) -> list:
    """The run's automation_paused notifications, once there is one (or the time is up)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        notes = rows(engine, Notification, Notification.notification_type == "automation_paused")
        if notes or asyncio.get_running_loop().time() > deadline:
            return notes
        await asyncio.sleep(0.05)


async def watch(api: httpx.AsyncClient, headers: dict, run_id: str, done, timeout_s: float = 240):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        progress = (await api.get(f"/automation/runs/{run_id}", headers=headers)).json()
        if done(progress):
            return progress
        assert asyncio.get_running_loop().time() < deadline, progress
        await asyncio.sleep(0.1)


async def test_a_full_run_meters_every_ai_call_and_the_ledger_balances(wctx: WorkerCtx):
    acct, headers, site_id = seeded_site(wctx, credits=20_000)
    engine = wctx.engine
    async with api_client(wctx) as api:
        result = await run_to_end(api, headers, site_id)
    assert result["status"] == "completed", result
    stages = {s["name"]: s for s in result["stages"]}
    # each stage's counts: every keyword clustered, every item through every stage
    assert stages["clustering"]["done"] == stages["clustering"]["total"] == 1  # 12 keywords
    assert all(k.cluster_id is not None for k in rows(engine, Keyword))
    articles = rows(engine, Content)
    assert stages["content"]["done"] == len(articles) == stages["review"]["done"] > 0
    assert all(a.status == "review" for a in articles)  # no auto-approve on this site
    images = rows(engine, Image)
    assert len(images) == 2 * len(articles) and all(i.status == "generated" for i in images)
    # AI Functions Test Suite: a task log per stage (and per child batch), one usage log and
    # one deduction per item, one notification per stage
    logs = rows(engine, AITaskLog)
    by_function = Counter(log.function_name for log in logs)
    for stage, (function, operation, note) in STAGE_FUNCTIONS.items():
        assert by_function[function] == 1, (function, by_function)
        usage = rows(engine, CreditUsageLog, CreditUsageLog.operation_type == operation)
        assert len(usage) == stages[stage]["done"]
        assert all(u.tokens_input > 0 and u.tokens_output > 0 and u.cost_usd > 0 for u in usage)
        assert len(rows(engine, Notification, Notification.notification_type == note)) == 1
    assert all(log.status == "success" for log in logs)
    assert by_function["generate_images"] >= 1
    # Credit System Verification: usage = deductions = the balance change
    usage = rows(engine, CreditUsageLog)
    deductions = rows(engine, CreditTransaction, CreditTransaction.transaction_type == "deduction")
    assert len(usage) == len(deductions)
    used = sum(u.credits_used for u in usage)
    assert used == -sum(d.amount for d in deductions) == result["credits_used"]
    assert builders.balance(engine, acct) == 20_000 - used == result["balance"]
    assert Decimal(str(result["cost_usd"])) == sum((u.cost_usd for u in usage), Decimal("0"))
    assert reconcile(engine) == []
    kinds = [n.notification_type for n in rows(engine, Notification)]
    assert kinds.count("automation_completed") == 1
    # articles carry their SEO fields and alt texts
    for article in articles:
        assert 0 < len(article.meta_title) <= 60 and 0 < len(article.meta_description) <= 160
        assert article.slug and article.focus_keyword and article.target_keywords
    assert all(0 < len(i.alt_text) <= 125 for i in images)


async def test_a_later_run_picks_up_only_what_is_unprocessed_and_titles_stay_unique(
    wctx: WorkerCtx,
):
    acct, headers, site_id = seeded_site(wctx, credits=40_000, keywords=KEYWORDS[:6])
    engine = wctx.engine
    async with api_client(wctx) as api:
        first = await run_to_end(api, headers, site_id)
        before = {
            t: len(rows(engine, m)) for t, m in (("content", Content), ("ideas", ContentIdea))
        }
        again = await run_to_end(api, headers, site_id)  # nothing new: nothing done or charged
        builders.keywords(engine, acct, site_id, KEYWORDS[6:])
        third = await run_to_end(api, headers, site_id)
    assert first["status"] == again["status"] == third["status"] == "completed"
    assert again["credits_used"] == 0 and all(s["total"] == 0 for s in again["stages"])
    assert len(rows(engine, Content)) > before["content"]
    titles = [normalise_title(i.title) for i in rows(engine, ContentIdea)]
    assert len(titles) == len(set(titles)), "two ideas of the site share a title"
    assert reconcile(engine) == []


async def test_one_active_run_per_site_and_another_accounts_run_is_404(wctx: WorkerCtx):
    _acct, headers, site_id = seeded_site(wctx, credits=20_000)
    _other, other_key = builders.account(wctx.engine, credits=10)
    other = {"Authorization": f"Bearer {other_key}"}
    async with api_client(wctx) as api:
        first = await api.post("/automation/runs", json={"site_id": site_id}, headers=headers)
        second = await api.post("/automation/runs", json={"site_id": site_id}, headers=headers)
        assert (first.status_code, second.status_code) == (202, 409), second.text
        assert "already has an active automation run" in second.json()["detail"]
        run_id = first.json()["run_id"]
        assert (await api.get(f"/automation/runs/{run_id}", headers=other)).status_code == 404
        assert (
            await api.post(f"/automation/runs/{run_id}/pause", headers=other)
        ).status_code == 404
        theirs = await api.post("/automation/runs", json={"site_id": site_id}, headers=other)
        assert theirs.status_code == 404
        listed = (await api.get("/automation/runs", headers=headers)).json()
        assert [r["run_id"] for r in listed["data"]] == [run_id]
        await api.post(f"/automation/runs/{run_id}/cancel", headers=headers)
        final = await watch(api, headers, run_id, lambda p: p["status"] in FINAL)
        assert final["status"] == "cancelled"
        # the site is free again
        again = await api.post("/automation/runs", json={"site_id": site_id}, headers=headers)
        assert again.status_code == 202
        await api.post(f"/automation/runs/{again.json()['run_id']}/cancel", headers=headers)
        await watch(api, headers, again.json()["run_id"], lambda p: p["status"] in FINAL)
    assert reconcile(wctx.engine) == []


async def test_half_funded_run_pauses_then_a_top_up_and_resume_complete_it(wctx: WorkerCtx):
    acct, headers, site_id = seeded_site(wctx, credits=60)
    engine = wctx.engine
    async with api_client(wctx) as api:
        started = await api.post("/automation/runs", json={"site_id": site_id}, headers=headers)
        run_id = started.json()["run_id"]
        paused = await watch(api, headers, run_id, lambda p: p["status"] in {"paused", *FINAL})
        assert (paused["status"], paused["pause_reason"]) == ("paused", "insufficient_credits")
        notes = await paused_notes(engine)  # written just after the status changes
        assert len(notes) == 1 and "Top up" in notes[0].message
        builders.top_up(engine, acct, 20_000)
        resumed = await api.post(f"/automation/runs/{run_id}/resume", headers=headers)
        assert resumed.status_code == 202
        final = await watch(api, headers, run_id, lambda p: p["status"] in FINAL)
    assert final["status"] == "completed", final
    assert rows(engine, CreditUsageLog)  # the items were charged ...
    deductions = rows(engine, CreditTransaction, CreditTransaction.transaction_type == "deduction")
    keys = [d.idempotency_key for d in deductions]
    assert len(keys) == len(set(keys))  # ... once
    assert reconcile(engine) == []


async def test_sse_watchers_see_the_balance_fall_while_images_are_made(wctx: WorkerCtx):
    acct, headers, site_id = seeded_site(wctx, credits=20_000)
    wctx.sim.configure(latency_s=0.15)
    async with api_client(wctx) as api:
        started = await api.post("/automation/runs", json={"site_id": site_id}, headers=headers)
        run_id = started.json()["run_id"]
        snapshots = []
        async with api.stream("GET", f"/automation/runs/{run_id}/events", headers=headers) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    snapshots.append(json.loads(line[6:]))
    assert snapshots[-1]["status"] == "completed"
    during_images = [
        s["balance"]
        for s in snapshots
        if next(st for st in s["stages"] if st["name"] == "images")["status"] == "running"
    ]
    falls = sum(1 for a, b in itertools.pairwise(during_images) if b < a)
    assert falls >= 2, during_images  # the balance moved image by image, not only at the end
    # the items being worked on, by their titles as stored (the images stage always has some)
    named = {
        (i["stage"], i["kind"], i["id"], i["title"]) for s in snapshots for i in s["current_items"]
    }
    assert "images" in {stage for stage, *_ in named}, named
    column = {"keyword": "keyword", "cluster": "name", "task": "title", "content": "title"}
    table = {"keyword": "keywords", "cluster": "clusters", "task": "tasks", "content": "content"}
    with wctx.engine.connect() as conn:
        for _stage, kind, item_id, title in named:
            sql = (
                f"SELECT {column[kind]} FROM igny8_{table[kind]} WHERE id = :i AND account_id = :a"
            )
            assert conn.execute(text(sql), {"i": item_id, "a": acct}).scalar_one() == title
    assert snapshots[-1]["current_items"] == []
    assert snapshots[-1]["balance"] == builders.balance(wctx.engine, acct)


async def test_sse_watchers_are_pushed_each_change_without_waiting_for_a_poll(wctx: WorkerCtx):
    """On PostgreSQL the workflow's changes reach the API by NOTIFY (domain/progress_feed.py):
    with the API's poll slowed to once in ten minutes, a watcher still sees the run move
    step by step, to its end (the run's row finishing is pushed too)."""
    url = pg_notify.postgres_url(wctx.engine)
    if url is None:
        pytest.skip("NOTIFY is PostgreSQL's: on SQLite the API polls only")
    acct, headers, site_id = seeded_site(wctx, credits=20_000)
    wctx.sim.configure(latency_s=0.05)
    feed = progress_feed.PgFeed(url).start()
    progress_feed.install(feed)  # the test's worker runs in this process
    events = RunEvents(tick_s=600, feed_url=url, send_gap_s=0)
    app = create_app(wctx.settings, connect_temporal=False)
    app.dependency_overrides[get_engine] = lambda: wctx.engine
    app.dependency_overrides[get_settings_dep] = lambda: wctx.settings
    app.dependency_overrides[get_temporal] = lambda: wctx.client
    app.state.run_events = events
    events.start()
    snapshots = []
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as api:
            started = await api.post("/automation/runs", json={"site_id": site_id}, headers=headers)
            path = f"/automation/runs/{started.json()['run_id']}/events"

            async def watch_to_the_end() -> None:
                async with api.stream("GET", path, headers=headers) as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("data: "):
                            snapshots.append(json.loads(line[6:]))

            # without the notes the stream would wait for the poll, ten minutes away
            await asyncio.wait_for(watch_to_the_end(), 120)
    finally:
        progress_feed.install(None)
        feed.close()
        await events.close()
    assert snapshots[-1]["status"] == "completed"
    versions = [s["version"] for s in snapshots[:-1]]  # the last is the row's (no version)
    assert len(versions) >= 10 and versions == sorted(set(versions)), versions
    assert events.notes_heard >= len(versions) - 1 and feed.sent >= len(versions) - 1
    assert snapshots[-1]["balance"] == builders.balance(wctx.engine, acct)


async def test_workers_killed_mid_run_and_restarted_finish_it_with_nothing_twice(
    engine, db_url, temporal_env, task_queue, sim, tmp_path
):
    import signal

    if not db_url.startswith("postgresql"):
        pytest.skip("one backend is enough for the SIGKILL run (every other run test uses both)")
    from domain.automation import claim_site
    from models import AICall
    from tests.procs import start_worker, stop, worker_env
    from tests.test_image_batch import stop_hold_sweeper
    from workflows.automation_run import AutomationRunWorkflow
    from workflows.client import new_run_id, start_automation_run

    ctx = WorkerCtx(temporal_env.client, task_queue, engine, None, sim)  # type: ignore[arg-type]
    more = [f"{k} {extra}" for k in KEYWORDS for extra in ("guide", "tips")]
    acct, _headers, site_id = seeded_site(ctx, credits=40_000, keywords=KEYWORDS + more)
    sim.configure(latency_s=0.3)
    address = temporal_env.client.service_client.config.target_host
    env = worker_env(db_url, address, task_queue, sim.url, tmp_path / "media")
    run_id = new_run_id(acct, site_id)
    with engine.begin() as conn:
        assert claim_site(conn, run_id, acct, site_id, None)
    first = [start_worker(env), start_worker(env)]
    try:
        handle = await start_automation_run(
            temporal_env.client, task_queue, account_id=acct, site_id=site_id, run_id=run_id
        )
        for _ in range(600):  # until articles are being written
            progress = await handle.query(AutomationRunWorkflow.progress)
            if next(s for s in progress.stages if s.name == "content").done >= 2:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no article written: {progress}")
    finally:
        for proc in first:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    second = [start_worker(env), start_worker(env)]
    try:
        result = await asyncio.wait_for(handle.result(), timeout=240)
    finally:
        for proc in second:
            stop(proc, timeout_s=30)
        await stop_hold_sweeper(temporal_env.client, task_queue)
    assert result.status == "completed", result
    calls = [(c.function_name, c.item_id) for c in rows(engine, AICall) if c.status == "done"]
    assert len(calls) == len(set(calls)), "an item was processed twice"
    deductions = rows(engine, CreditTransaction, CreditTransaction.transaction_type == "deduction")
    keys = [d.idempotency_key for d in deductions]
    assert len(keys) == len(set(keys)) == len(rows(engine, CreditUsageLog))
    tasks_with_content = [a.task_id for a in rows(engine, Content)]
    assert len(tasks_with_content) == len(set(tasks_with_content))
    assert result.credits_used == -sum(d.amount for d in deductions)
    assert reconcile(engine) == []


async def test_articles_waiting_from_an_earlier_run_go_on_to_images_and_review(wctx: WorkerCtx):
    """Drafts left without image prompts (written before, by hand or by a run that was
    cancelled) are picked up at that stage and carried through images and review."""
    acct, headers, site_id = seeded_site(wctx, credits=20_000, keywords=[])
    _task, draft = builders.task_with_content(wctx.engine, acct, site_id, "Cold Brew at Home")
    async with api_client(wctx) as api:
        result = await run_to_end(api, headers, site_id)
    stages = {s["name"]: s for s in result["stages"]}
    assert [stages[n]["done"] for n in ("image_prompts", "images", "review")] == [1, 1, 1]
    article = next(a for a in rows(wctx.engine, Content) if a.id == draft.id)
    assert article.status == "review" and article.image_prompts
    assert len(rows(wctx.engine, Image, Image.content_id == draft.id)) == 2
