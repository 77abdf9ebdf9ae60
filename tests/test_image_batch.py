"""ImageBatchWorkflow against the real Temporal dev server, the simulator over HTTP and
both databases: every image checked, generated, charged once, logged and notified."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select, text

from domain.operator_sql import OPERATOR_QUERIES
from domain.reconcile import reconcile
from models import AITaskLog, CreditUsageLog, Image, Notification
from providers.media_store import LocalMediaStore
from tests import builders
from tests.procs import stop
from tests.temporal_fixtures import WorkerCtx
from workflows.client import start_image_batch
from workflows.engine.items import EVENTS_PER_ITEM_MAX, IN_FLIGHT_PER_SLOT

pytestmark = pytest.mark.temporal
FINISHED = {"completed", "failed", "cancelled"}

# DESIGN §6's queries, verbatim, from the one place the CLI also runs them.
OPERATOR_SQL = dict(
    zip(
        ["models", "task_logs", "usage", "notifications", "deductions"],
        OPERATOR_QUERIES.values(),
        strict=True,
    )
)


def operator_rows(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {
            name: [tuple(r) for r in conn.execute(text(sql))] for name, sql in OPERATOR_SQL.items()
        }


def setup_tasks(ctx: WorkerCtx | sa.Engine, credits: int, n_tasks: int, **model_overrides):
    engine = ctx.engine if isinstance(ctx, WorkerCtx) else ctx
    builders.billing_config(engine, "0.01")
    cfg = builders.model_config(engine, **model_overrides)
    acct, _ = builders.account(engine, credits=credits)
    site = builders.site(engine, acct, max_in_article_images=1)
    tasks = [
        builders.task_with_content(engine, acct, site.id, f"Topic {i}")[0] for i in range(n_tasks)
    ]
    return acct, cfg, [t.id for t in tasks]


def count(engine, model, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(model.__table__).where(*where)
        ).scalar_one()


async def test_happy_path_charges_each_image_once_and_logs_everything(wctx: WorkerCtx):
    acct, cfg, task_ids = setup_tasks(wctx, credits=100, n_tasks=3)
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    result = await handle.result()
    images = 3 * 2  # featured + 1 in-article per task
    assert result.status == "completed"
    assert (result.images_done, result.images_failed) == (images, 0)
    assert result.credits_used == images * cfg.credits_per_image == 12
    assert result.cost_usd == Decimal("0.24")
    assert result.balance == 100 - 12
    engine = wctx.engine
    assert reconcile(engine) == []
    with engine.connect() as conn:
        logs = conn.execute(select(AITaskLog.__table__)).all()
        usage = conn.execute(select(CreditUsageLog.__table__)).all()
        notes = conn.execute(select(Notification.__table__)).all()
        files = conn.execute(select(Image.__table__.c.file_path)).scalars().all()
    assert [(t.function_name, t.phase, t.status, t.credits_used) for t in logs] == [
        ("generate_images", "DONE", "success", 12)
    ]
    assert logs[0].cost == Decimal("0.24")
    assert len(usage) == images and {u.credits_used for u in usage} == {2}
    assert all(u.cost_usd == Decimal("0.04") and u.billed_usd == Decimal("0.02") for u in usage)
    assert [n.notification_type for n in notes] == ["ai_image_success"]
    assert "Generated 6 images using 12 credits" in notes[0].message
    store = LocalMediaStore(wctx.settings.media_dir)
    assert len(set(files)) == images and all(store.get(f)[:4] == b"\x89PNG" for f in files)
    rows = operator_rows(engine)
    assert [(r[0], r[3]) for r in rows["models"]] == [(cfg.model_name, 2)]
    assert [(r[0], r[1], Decimal(str(r[2]))) for r in rows["task_logs"]] == [
        ("generate_images", 1, Decimal("0.24"))
    ]
    assert [(r[0], r[1], r[2], round(Decimal(str(r[3])), 6)) for r in rows["usage"]] == [
        ("image_generation", 6, 12, Decimal("0.24"))
    ]
    assert rows["notifications"] == [("ai_image_success", 1)]
    assert rows["deductions"] == [("image_generation", 6, -12)]


def generated_images(engine) -> int:
    return count(engine, Image, Image.__table__.c.status == "generated")


def deductions(engine) -> int:
    from models import CreditTransaction

    t = CreditTransaction.__table__
    return count(engine, CreditTransaction, t.c.transaction_type == "deduction")


def notes_of(engine, kind: str) -> list:
    t = Notification.__table__
    with engine.connect() as conn:
        return conn.execute(select(t).where(t.c.notification_type == kind)).all()


async def test_insufficient_credits_generates_and_charges_nothing(wctx: WorkerCtx):
    acct, cfg, task_ids = setup_tasks(wctx, credits=5, n_tasks=3)
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    result = await handle.result()
    assert result.status == "failed"
    assert result.errors == ["Insufficient credits. Required: 12, Available: 5"]
    assert generated_images(wctx.engine) == 0 and deductions(wctx.engine) == 0
    assert wctx.sim.stats()["images_generated"] == 0
    with wctx.engine.connect() as conn:
        log = conn.execute(select(AITaskLog.__table__)).one()
    assert (log.status, log.error) == ("error", "Insufficient credits. Required: 12, Available: 5")
    [note] = notes_of(wctx.engine, "ai_image_failed")
    assert "Required: 12, Available: 5" in note.message
    assert note.details["required"] == 12 and note.details["available"] == 5
    assert reconcile(wctx.engine) == []


async def test_injected_429_and_500_faults_still_charge_every_image_once(wctx: WorkerCtx):
    wctx.sim.configure(rate_429=0.1, rate_500=0.1, retry_after_s=0.05)
    acct, cfg, task_ids = setup_tasks(wctx, credits=100, n_tasks=6)
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    result = await handle.result()
    stats = wctx.sim.stats()
    assert stats["injected_429"] + stats["injected_500"] > 0, stats
    assert (result.status, result.images_done, result.images_failed) == ("completed", 12, 0)
    assert generated_images(wctx.engine) == 12 and deductions(wctx.engine) == 12
    assert result.credits_used == 24 and result.balance == 76
    assert reconcile(wctx.engine) == []


async def test_content_policy_refusals_fail_only_those_images_uncharged(wctx: WorkerCtx):
    engine = wctx.engine
    builders.billing_config(engine)
    cfg = builders.model_config(engine)
    acct, _ = builders.account(engine, credits=100)
    site = builders.site(engine, acct)
    titles = ["Safe one", "Bad [unsafe] topic", "Safe two"]
    task_ids = [builders.task_with_content(engine, acct, site.id, t)[0].id for t in titles]
    handle = await start_image_batch(
        wctx.client,
        wctx.task_queue,
        account_id=acct,
        task_ids=task_ids,
        model=cfg.model_name,
        max_in_article_images=1,
    )
    result = await handle.result()
    assert (result.status, result.images_done, result.images_failed) == ("completed", 4, 2)
    assert result.credits_used == 8 and result.balance == 92
    assert any("content policy" in e.lower() for e in result.errors), result.errors
    t = Image.__table__
    with engine.connect() as conn:
        failed = conn.execute(select(t).where(t.c.status == "failed")).all()
    assert len(failed) == 2 and all(f.credits_used == 0 and f.error for f in failed)
    assert deductions(engine) == 4
    [note] = notes_of(engine, "ai_image_success")
    assert "Generated 4 images using 8 credits" in note.message and "2 failed" in note.message
    assert reconcile(engine) == []


@pytest.mark.parametrize("model", ["no-such-model", "retired-model"])
async def test_unknown_or_inactive_model_is_a_clear_non_retryable_error(wctx: WorkerCtx, model):
    acct, _cfg, task_ids = setup_tasks(wctx, credits=100, n_tasks=1)
    builders.model_config(wctx.engine, model_name="retired-model", is_active=False)
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=model
    )
    result = await handle.result()
    expected = "is not configured" if model == "no-such-model" else "is inactive"
    assert result.status == "failed"
    assert result.errors == [f"AI model '{model}' {expected}"]
    assert "AttributeError" not in result.errors[0]
    # ModelUnavailable is not retried: the plan activity ran exactly once. (Only the plan:
    # the bookkeeping activities after it may legitimately retry on a busy database.)
    events = [e async for e in handle.fetch_history_events()]
    activity_types = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    plan_attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in events
        if e.HasField("activity_task_started_event_attributes")
        and activity_types[e.activity_task_started_event_attributes.scheduled_event_id]
        == "plan_image_batch"
    ]
    assert plan_attempts == [1], plan_attempts
    [note] = notes_of(wctx.engine, "ai_image_failed")
    assert model in note.message
    assert deductions(wctx.engine) == 0 and reconcile(wctx.engine) == []


async def wait_for(handle, predicate, timeout_s: float = 30.0):
    """Poll the progress query until `predicate(progress)` holds."""
    import asyncio

    from workflows.image_batch import ImageBatchWorkflow

    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        progress = await handle.query(ImageBatchWorkflow.progress)
        if predicate(progress):
            return progress
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out; last progress {progress}")
        await asyncio.sleep(0.05)


async def test_cancel_mid_batch_charges_only_stored_images_and_releases_the_hold(wctx: WorkerCtx):
    from domain.ledger import Ledger
    from workflows.image_batch import ControlInput, ImageBatchWorkflow

    wctx.sim.configure(latency_s=0.3)
    acct, cfg, task_ids = setup_tasks(wctx, credits=100, n_tasks=10, max_concurrency=2)
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    running = await wait_for(handle, lambda p: p.images_done >= 2)
    assert running.credits_reserved > 0
    await handle.signal(ImageBatchWorkflow.cancel, ControlInput(reason="user"))
    result = await handle.result()
    stored = generated_images(wctx.engine)
    assert result.status == "cancelled"
    assert 2 <= result.images_done == stored < 20
    assert result.credits_used == stored * 2 and deductions(wctx.engine) == stored
    bal = Ledger(wctx.engine).balance(acct)
    assert (bal.credits, bal.reserved, bal.available) == (100 - stored * 2, 0, 100 - stored * 2)
    assert result.balance == 100 - stored * 2
    with wctx.engine.connect() as conn:
        log = conn.execute(select(AITaskLog.__table__)).one()
    assert (log.status, log.credits_used) == ("cancelled", stored * 2)
    assert len(notes_of(wctx.engine, "ai_image_cancelled")) == 1
    assert reconcile(wctx.engine) == []


async def test_pause_then_resume_completes_and_balance_falls_live(wctx: WorkerCtx):
    import asyncio

    from workflows.image_batch import ControlInput, ImageBatchWorkflow

    # One image at a time, 0.3 s each, 16 images: ~5 s of work, so the pause lands with most
    # images still unclaimed and the balance is sampled well before the end.
    wctx.sim.configure(latency_s=0.3)
    acct, cfg, task_ids = setup_tasks(wctx, credits=100, n_tasks=8, max_concurrency=1)
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    # Each balance comes from the same progress snapshot as the count it is compared with.
    early = await wait_for(handle, lambda p: p.images_done >= 2)
    balances = [early.balance]
    await handle.signal(ImageBatchWorkflow.pause, ControlInput(reason="user"))
    paused = await wait_for(
        handle,
        lambda p: (p.status == "paused" and p.images_in_flight == 0) or p.status in FINISHED,
    )
    assert paused.status == "paused", f"the batch ended before the pause held it: {paused}"
    assert paused.images_total - paused.images_done - paused.images_failed >= 2, (
        f"the pause came too late: fewer than 2 images left to resume {paused}"
    )
    await asyncio.sleep(0.8)
    still = await handle.query(ImageBatchWorkflow.progress)
    assert still.images_done == paused.images_done < 16  # nothing claimed while paused
    assert (still.status, still.pause_reason) == ("paused", "user")
    await handle.signal(ImageBatchWorkflow.resume, ControlInput())
    resumed = await wait_for(handle, lambda p: p.images_done >= paused.images_done + 2)
    balances.append(resumed.balance)
    result = await handle.result()
    assert (result.status, result.images_done, result.balance) == ("completed", 16, 68)
    balances.append(result.balance)
    assert balances == sorted(balances, reverse=True) and len(set(balances)) == 3, balances
    assert reconcile(wctx.engine) == []


async def test_ten_batches_on_an_account_funded_for_four(wctx: WorkerCtx):
    import asyncio

    from domain.ledger import Ledger

    acct, cfg, task_ids = setup_tasks(wctx, credits=16, n_tasks=10)  # 4 credits a batch
    handles = await asyncio.gather(
        *(
            start_image_batch(
                wctx.client, wctx.task_queue, account_id=acct, task_ids=[t], model=cfg.model_name
            )
            for t in task_ids
        )
    )
    results = await asyncio.gather(*(h.result() for h in handles))
    statuses = sorted(r.status for r in results)
    assert statuses == ["completed"] * 4 + ["failed"] * 6
    failed = [r for r in results if r.status == "failed"]
    assert all(r.errors[0].startswith("Insufficient credits. Required: 4") for r in failed)
    assert all(r.credits_used == 0 and r.images_done == 0 for r in failed)
    assert len(notes_of(wctx.engine, "ai_image_failed")) == 6
    bal = Ledger(wctx.engine).balance(acct)
    assert (bal.credits, bal.reserved, bal.available) == (0, 0, 0)
    assert reconcile(wctx.engine) == []


async def test_history_stays_bounded_by_continuing_as_new(wctx: WorkerCtx):
    # Every image costs at least 3 events (activity scheduled, started, completed), so a
    # run claims at most limit / 3 images before it stops claiming, plus the 3×C already
    # in flight: 60 / 3 + 3 × 2 = 26 images per run, and 60 images need at least 3 runs
    # however the completions batch into workflow tasks.
    limit = 60
    acct, cfg, task_ids = setup_tasks(wctx, credits=1000, n_tasks=30, max_concurrency=2)
    handle = await start_image_batch(
        wctx.client,
        wctx.task_queue,
        account_id=acct,
        task_ids=task_ids,
        model=cfg.model_name,
        history_limit=limit,
    )
    result = await handle.result()
    assert (result.status, result.images_done, result.credits_used) == ("completed", 60, 120)
    # Follow the chain of runs through their histories (visibility is eventually consistent).
    lengths, run_id = [], handle.first_execution_run_id
    while run_id:
        run = wctx.client.get_workflow_handle(handle.id, run_id=run_id)
        events = [e async for e in run.fetch_history_events()]
        lengths.append(len(events))
        last = events[-1]
        continued = last.HasField("workflow_execution_continued_as_new_event_attributes")
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if continued
            else None
        )
    assert len(lengths) >= 3, lengths  # it really continued as new
    # the limit, plus draining at most 3×C images in flight, plus the finish
    bound = limit + IN_FLIGHT_PER_SLOT * cfg.max_concurrency * EVENTS_PER_ITEM_MAX + 50
    assert max(lengths) < bound, lengths
    assert deductions(wctx.engine) == 60 and reconcile(wctx.engine) == []


async def stop_hold_sweeper(client, task_queue: str) -> None:
    """A subprocess worker starts its task queue's hold sweeper; once that worker is gone
    the sweeper would sit on a queue nobody polls. Terminate it."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    from workflows.hold_sweeper import sweeper_id

    sweeper = client.get_workflow_handle(sweeper_id(task_queue))
    try:
        desc = await sweeper.describe()
        if desc.task_queue == task_queue and desc.status == WorkflowExecutionStatus.RUNNING:
            await sweeper.terminate(reason="test over: its worker is gone")
    except RPCError:  # never started, or already closed
        pass


async def test_worker_killed_with_sigkill_mid_batch_finishes_without_double_charge(
    engine, db_url, temporal_env, task_queue, sim, tmp_path
):
    import asyncio
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    media = tmp_path / "media"
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": db_url,
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "TASK_QUEUE": task_queue,
        "SIMULATOR_HOST": "127.0.0.1",
        "SIMULATOR_PORT": sim.url.rsplit(":", 1)[1],
        "MEDIA_DIR": str(media),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("OPENAI_API_KEY", None)

    def start_worker() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "worker.py"], cwd=root, env=env)

    sim.configure(latency_s=0.4)
    acct, cfg, task_ids = setup_tasks(engine, credits=200, n_tasks=15, max_concurrency=4)
    first = start_worker()
    try:
        handle = await start_image_batch(
            temporal_env.client,
            task_queue,
            account_id=acct,
            task_ids=task_ids,
            model=cfg.model_name,
        )
        await wait_for(handle, lambda p: p.images_done >= 5, timeout_s=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = start_worker()
    try:
        result = await asyncio.wait_for(handle.result(), timeout=180)
    finally:
        stop(second, timeout_s=30)
        await stop_hold_sweeper(temporal_env.client, task_queue)
    assert (result.status, result.images_done, result.images_failed) == ("completed", 30, 0)
    assert generated_images(engine) == 30 and deductions(engine) == 30
    files = sorted(p.name for p in media.rglob("*") if p.is_file())
    assert len(files) == 30 and not [f for f in files if f.endswith(".part")], files
    assert result.credits_used == 60 and result.balance == 140
    assert reconcile(engine) == []


async def test_cancel_from_temporal_ui_or_cli_behaves_like_the_signal(wctx: WorkerCtx):
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import CancelledError

    from domain.ledger import Ledger

    wctx.sim.configure(latency_s=0.3)
    acct, cfg, task_ids = setup_tasks(wctx, credits=100, n_tasks=8, max_concurrency=2)
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    await wait_for(handle, lambda p: p.images_done >= 2)
    await handle.cancel()  # what the Temporal UI's "Cancel" and `temporal workflow cancel` do
    with pytest.raises(WorkflowFailureError) as err:
        await handle.result()
    assert isinstance(err.value.cause, CancelledError)  # the UI shows it as Canceled
    stored = generated_images(wctx.engine)
    assert 2 <= stored < 16 and deductions(wctx.engine) == stored
    bal = Ledger(wctx.engine).balance(acct)
    assert (bal.credits, bal.reserved) == (100 - 2 * stored, 0)
    with wctx.engine.connect() as conn:
        log = conn.execute(select(AITaskLog.__table__)).one()
    assert (log.status, log.credits_used) == ("cancelled", 2 * stored)
    assert len(notes_of(wctx.engine, "ai_image_cancelled")) == 1
    assert reconcile(wctx.engine) == []


async def test_pause_survives_a_worker_restart(
    temporal_client, task_queue, engine, db_url, sim, tmp_path
):
    from tests.temporal_fixtures import running_worker, test_settings
    from workflows.image_batch import ControlInput, ImageBatchWorkflow

    # One image at a time, 0.3 s each, 12 images: the pause lands with images unclaimed.
    sim.configure(latency_s=0.3)
    settings = test_settings(db_url, sim.url, tmp_path / "media", task_queue)
    acct, cfg, task_ids = setup_tasks(engine, credits=100, n_tasks=6, max_concurrency=1)
    async with running_worker(temporal_client, settings, engine):
        handle = await start_image_batch(
            temporal_client, task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
        )
        await wait_for(handle, lambda p: p.images_done >= 1)
        await handle.signal(ImageBatchWorkflow.pause, ControlInput(reason="user"))
        paused = await wait_for(
            handle,
            lambda p: (p.status == "paused" and p.images_in_flight == 0) or p.status in FINISHED,
        )
        assert paused.status == "paused", f"the batch ended before the pause held it: {paused}"
        assert paused.images_done + paused.images_failed < paused.images_total, (
            f"the pause came too late: nothing left to resume {paused}"
        )
    # That worker is gone; a new one rebuilds the workflow from its history.
    async with running_worker(temporal_client, settings, engine):
        import asyncio

        await asyncio.sleep(1.0)
        again = await handle.query(ImageBatchWorkflow.progress)
        assert (again.status, again.images_done) == ("paused", paused.images_done)
        await handle.signal(ImageBatchWorkflow.resume, ControlInput())
        result = await handle.result()
    assert (result.status, result.images_done, result.credits_used) == ("completed", 12, 24)
    assert reconcile(engine) == []


async def test_batches_are_findable_and_readable_in_the_temporal_ui(wctx: WorkerCtx):
    from core.temporal import ACCOUNT_ID, RUN_KIND, SITE_ID

    acct, cfg, task_ids = setup_tasks(wctx, credits=100, n_tasks=1)
    handle = await start_image_batch(
        wctx.client,
        wctx.task_queue,
        account_id=acct,
        task_ids=task_ids,
        model=cfg.model_name,
        site_id=1,
    )
    await handle.result()
    assert handle.id.startswith(f"image-batch-{acct}-")
    desc = await handle.describe()
    attrs = desc.typed_search_attributes
    assert (attrs.get(ACCOUNT_ID), attrs.get(RUN_KIND), attrs.get(SITE_ID)) == (
        acct,
        "image_batch",
        1,
    )
    assert "Image batch: 1 tasks" in (await desc.static_summary())
    summaries = [
        e.user_metadata.summary
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert all(s.data for s in summaries) and len(summaries) >= 6  # every activity has one
    # What the UI shows as "current details": the built-in metadata query.
    from temporalio.api.sdk.v1 import WorkflowMetadata

    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert "images 2/2 done" in meta.current_details, meta.current_details
    assert "credits used 4" in meta.current_details


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_two_thousand_image_batch_keeps_every_history_under_the_warning(
    wctx: WorkerCtx, db_url: str
):
    if not db_url.startswith("postgresql"):
        pytest.skip("one backend is enough for the 2,000-image run (the small one runs on both)")
    acct, cfg, task_ids = setup_tasks(wctx, credits=5000, n_tasks=1000, max_concurrency=50)
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    result = await handle.result()
    assert (result.status, result.images_done, result.credits_used) == ("completed", 2000, 4000)
    lengths, run_id = [], handle.first_execution_run_id
    while run_id:
        events = [
            e
            async for e in wctx.client.get_workflow_handle(
                handle.id, run_id=run_id
            ).fetch_history_events()
        ]
        lengths.append(len(events))
        last = events[-1].workflow_execution_continued_as_new_event_attributes
        run_id = last.new_execution_run_id or None
    assert max(lengths) < 10_240, lengths
    assert deductions(wctx.engine) == 2000 and reconcile(wctx.engine) == []


async def test_a_fast_wide_model_sends_images_in_lanes_each_made_and_charged_once(
    wctx: WorkerCtx,
):
    from workflows.image_batch import LANE_MIN_CONCURRENCY, LANE_SIZE

    acct, cfg, task_ids = setup_tasks(
        wctx, credits=1000, n_tasks=40, max_concurrency=LANE_MIN_CONCURRENCY
    )
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    result = await handle.result()
    assert (result.status, result.images_done, result.credits_used) == ("completed", 80, 160)
    sent: dict[str, list[int]] = {"generate_image": [], "generate_images": []}
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name in sent:
                [payload] = scheduled.input.payloads
                images = json.loads(payload.data).get("images", [None])
                sent[scheduled.activity_type.name].append(len(images))
    # the first calls go alone (their speed unknown), then lanes of up to LANE_SIZE
    assert sent["generate_images"] and max(sent["generate_images"]) <= LANE_SIZE
    assert sum(sent["generate_images"]) + len(sent["generate_image"]) == 80
    assert wctx.sim.stats()["images_generated"] == 80  # none made twice
    assert generated_images(wctx.engine) == 80 and deductions(wctx.engine) == 80
    assert reconcile(wctx.engine) == []


async def test_two_batches_for_the_same_tasks_never_make_or_charge_an_image_twice(
    wctx: WorkerCtx,
):
    import asyncio

    wctx.sim.configure(latency_s=0.2)
    acct, cfg, task_ids = setup_tasks(wctx, credits=100, n_tasks=3)
    handles = await asyncio.gather(
        *(
            start_image_batch(
                wctx.client,
                wctx.task_queue,
                account_id=acct,
                task_ids=task_ids,
                model=cfg.model_name,
            )
            for _ in range(2)
        )
    )
    results = await asyncio.gather(*(h.result() for h in handles))
    assert sum(r.images_done for r in results) == 6, results
    assert generated_images(wctx.engine) == 6 and deductions(wctx.engine) == 6
    assert wctx.sim.stats()["images_generated"] == 6
    assert sum(r.credits_used for r in results) == 12
    assert reconcile(wctx.engine) == []


async def test_cancel_arriving_during_start_up_still_closes_everything(wctx: WorkerCtx):
    from temporalio.client import WorkflowFailureError

    acct, cfg, task_ids = setup_tasks(wctx, credits=100, n_tasks=3)
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    await handle.cancel()  # very likely lands while open/plan/reserve are running
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    from domain.ledger import Ledger

    bal = Ledger(wctx.engine).balance(acct)
    assert bal.reserved == 0 and bal.credits == 100 - 2 * deductions(wctx.engine)
    with wctx.engine.connect() as conn:
        statuses = conn.execute(select(AITaskLog.__table__.c.status)).scalars().all()
    assert statuses == ["cancelled"]
    assert reconcile(wctx.engine) == []


async def test_credits_running_out_mid_batch_pause_it_and_cancel_never_delivers_free_images(
    wctx: WorkerCtx,
):
    from domain.ledger import Ledger
    from workflows.image_batch import ControlInput, ImageBatchWorkflow

    wctx.sim.configure(latency_s=0.3)
    acct, cfg, task_ids = setup_tasks(wctx, credits=24, n_tasks=6, max_concurrency=2)
    ledger = Ledger(wctx.engine)
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    await wait_for(handle, lambda p: p.images_done >= 1 and p.credits_reserved > 0)
    # The hold vanishes (as if it expired) and another run takes every available credit.
    with wctx.engine.connect() as conn:
        from models import CreditReservation

        hold_id = conn.execute(select(CreditReservation.__table__.c.id)).scalar_one()
    ledger.release(hold_id)
    # A charge in flight may take available credits between the read and the reserve:
    # read again and retry until the other run holds everything that is left.
    from domain.ledger import InsufficientCredits

    for _ in range(50):
        available = ledger.balance(acct).available
        if available == 0:
            break
        try:
            ledger.reserve(acct, available, "another-run:hold")
            break
        except InsufficientCredits:
            continue
    else:
        raise AssertionError("could not take the account's available credits")
    assert ledger.balance(acct).available == 0
    paused = await wait_for(handle, lambda p: p.status == "paused", timeout_s=30)
    assert paused.pause_reason == "insufficient_credits"
    await handle.signal(ImageBatchWorkflow.cancel, ControlInput())
    result = await handle.result()
    assert result.status == "cancelled"
    assert len(notes_of(wctx.engine, "ai_image_paused")) == 1
    # Every stored image was charged; what could not be charged was withdrawn (failed, no file).
    assert generated_images(wctx.engine) == deductions(wctx.engine) == result.images_done
    t = Image.__table__
    with wctx.engine.connect() as conn:
        withdrawn = conn.execute(
            select(t).where(t.c.status == "failed", t.c.error.like("not charged%"))
        ).all()
    assert withdrawn and all(w.file_path is None for w in withdrawn)
    assert reconcile(wctx.engine) == []
