"""Activities are idempotent: a retried activity never writes a second row. And the
hold sweeper, on the time-skipping server, gives back a terminated run's credits."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.ledger import DeductInput, LedgerActivities, ReserveInput
from activities.logging import LoggingActivities, NotifyInput, OpenTaskLogInput
from domain.ledger import Ledger
from domain.reconcile import reconcile
from models import AITaskLog, CreditReservation, CreditTransaction, Notification
from tests import builders
from workflows.hold_sweeper import HoldSweeperWorkflow, SweeperInput


def rows(engine, model) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model.__table__)).scalar_one()


def test_retried_logging_activities_write_one_row(engine):
    acct, _ = builders.account(engine, credits=10)
    acts, env = LoggingActivities(engine), ActivityEnvironment()
    open_in = OpenTaskLogInput(
        account_id=acct, function_name="generate_images", idempotency_key="wf:log"
    )
    first, second = env.run(acts.open_task_log, open_in), env.run(acts.open_task_log, open_in)
    assert first == second and rows(engine, AITaskLog) == 1
    note = NotifyInput(
        account_id=acct,
        notification_type="ai_image_success",
        title="t",
        message="m",
        idempotency_key="wf:done",
        ai_task_log_id=first.task_log_id,
    )
    assert env.run(acts.notify, note) == env.run(acts.notify, note)
    assert rows(engine, Notification) == 1


def test_retried_ledger_activities_charge_and_hold_once(engine):
    acct, _ = builders.account(engine, credits=10)
    acts, env = LedgerActivities(Ledger(engine)), ActivityEnvironment()
    hold_in = ReserveInput(account_id=acct, amount=6, idempotency_key="wf:hold", operation_type="x")
    h1, h2 = env.run(acts.reserve_credits, hold_in), env.run(acts.reserve_credits, hold_in)
    assert h1.hold_id == h2.hold_id and rows(engine, CreditReservation) == 1
    ded = DeductInput(
        account_id=acct,
        amount=2,
        idempotency_key="wf:image:1",
        operation_type="image_generation",
        hold_id=h1.hold_id,
    )
    d1, d2 = env.run(acts.deduct_credits, ded), env.run(acts.deduct_credits, ded)
    assert (d1.replayed, d2.replayed, d1.transaction_id) == (False, True, d2.transaction_id)
    assert rows(engine, CreditTransaction) == 2  # opening purchase + one deduction
    assert Ledger(engine).balance(acct).credits == 8
    assert reconcile(engine) == []


def test_concurrent_duplicate_activity_attempts_still_write_one_row(engine):
    acct, _ = builders.account(engine)
    acts = LoggingActivities(engine)
    inp = OpenTaskLogInput(account_id=acct, function_name="generate_images", idempotency_key="race")
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(lambda _: ActivityEnvironment().run(acts.open_task_log, inp), range(8)))
    assert len(ids) == 1 and rows(engine, AITaskLog) == 1


@pytest.mark.temporal
async def test_sweeper_releases_an_expired_hold_in_skipped_time(
    engine, time_skipping_env: WorkflowEnvironment
):
    acct, _ = builders.account(engine, credits=50)
    # The hold is made on the test server's clock, which is not the wall clock.
    server_now = await time_skipping_env.get_current_time()
    ledger = Ledger(engine, hold_ttl_seconds=3600, clock=lambda: server_now)
    hold = ledger.reserve(acct, 50, "terminated-run:hold")  # nobody will ever release it
    assert ledger.balance(acct).available == 0
    queue = f"sweeper-{uuid.uuid4().hex}"
    with ThreadPoolExecutor(max_workers=4) as pool:
        async with Worker(
            time_skipping_env.client,
            task_queue=queue,
            workflows=[HoldSweeperWorkflow],
            activities=[LedgerActivities(ledger).expire_holds],
            activity_executor=pool,
        ):
            handle = await time_skipping_env.client.start_workflow(
                HoldSweeperWorkflow.run,
                SweeperInput(interval_seconds=600),
                id=f"sweeper-{uuid.uuid4().hex}",
                task_queue=queue,
            )
            await time_skipping_env.sleep(timedelta(minutes=30))
            early = await handle.query(HoldSweeperWorkflow.status)
            assert ledger.balance(acct).available == 0, (early, hold)  # not expired yet
            await time_skipping_env.sleep(timedelta(hours=1))
            status = await handle.query(HoldSweeperWorkflow.status)
            await handle.terminate()
    assert status.released_total == 1 and status.sweeps >= 7
    bal = ledger.balance(acct)
    assert (bal.credits, bal.reserved, bal.available) == (50, 0, 50)


async def _generate_attempt(engine, sim, tmp_path, attempt: int):
    """Run generate_image for a fresh image row as the given attempt, with a partial file
    that a killed earlier attempt would have left beside it."""
    from providers.registry import ProviderRegistry

    acct, image = builders.pending_image(engine)
    folder = tmp_path / "media" / str(acct) / "images"
    folder.mkdir(parents=True)
    stale = folder / f".{image.id}.png.deadbeef.part"
    stale.write_bytes(b"half an image")
    providers = ProviderRegistry(simulator_url=sim.url, timeout_s=10)
    acts = builders.image_activities(engine, providers, tmp_path / "media")
    env = builders.activity_env(attempt)
    out = await env.run(acts.generate_image, builders.generate_input(acct, image))
    await providers.aclose()
    return out, stale


@pytest.mark.parametrize("attempt", [1, 2])
async def test_only_a_retry_scans_for_a_killed_attempts_partial_file(
    engine, sim, tmp_path, attempt
):
    out, stale = await _generate_attempt(engine, sim, tmp_path, attempt)
    assert out.status == "generated" and out.file_path and out.provider_s >= 0
    # The first attempt cannot have left anything, so it skips the directory scan; a retry
    # clears what the killed attempt left.
    assert stale.exists() == (attempt == 1)


@pytest.mark.temporal
async def test_each_task_queue_gets_one_sweeper_of_its_own(temporal_client):
    from temporalio.client import WorkflowExecutionStatus

    from worker import ensure_hold_sweeper
    from workflows.hold_sweeper import sweeper_id

    queues = [f"q-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        runs = set()
        for queue in queues:
            await ensure_hold_sweeper(temporal_client, queue)
            desc = await temporal_client.get_workflow_handle(sweeper_id(queue)).describe()
            assert (desc.task_queue, desc.status) == (queue, WorkflowExecutionStatus.RUNNING)
            runs.add(desc.run_id)
        assert len(runs) == 2
        await ensure_hold_sweeper(temporal_client, queues[0])  # again: the same run goes on
        again = await temporal_client.get_workflow_handle(sweeper_id(queues[0])).describe()
        assert again.run_id in runs and again.status == WorkflowExecutionStatus.RUNNING
    finally:
        for queue in queues:
            await temporal_client.get_workflow_handle(sweeper_id(queue)).terminate()


class _StubImages:
    """An image provider that answers by prompt: "refuse" for good, "busy" for now."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def generate_image(self, *, model: str, prompt: str, size: str = "1024x1024"):
        from providers.base import ImageResult
        from providers.errors import make_error

        self.calls.append(prompt)
        if "refuse" in prompt:
            raise make_error("content_policy", "the prompt was refused by policy")
        if "busy" in prompt:
            raise make_error("rate_limited", "too many requests")
        return ImageResult(b"\x89PNG\r\n\x1a\nstub", "image/png", model, None)


class _StubRegistry:
    def __init__(self, images: _StubImages) -> None:
        self.images = images

    def image(self, provider: str) -> _StubImages:
        return self.images


async def test_a_lane_settles_each_image_on_its_own_and_a_retry_reuses_the_stored(engine, tmp_path):
    from activities.images import GenerateImagesInput

    stub = _StubImages()
    acts = builders.image_activities(engine, _StubRegistry(stub), tmp_path / "media")
    prompts = ["a cup", "refuse this", "busy now", "a pot"]
    made = [builders.pending_image(engine, prompt=p) for p in prompts]
    lane = GenerateImagesInput(
        images=[builders.generate_input(acct, img, max_concurrency=4) for acct, img in made]
    )
    out = await builders.activity_env(1).run(acts.generate_images, lane)
    assert [o.image_id for o in out.images] == [img.id for _, img in made]  # in order
    assert [o.status for o in out.images] == ["generated", "failed", "retry", "generated"]
    assert out.images[1].error == "the prompt was refused by policy"
    assert sorted(stub.calls) == sorted(prompts)
    assert len(builders.image_keys(engine)) == 2
    # The lane retried (its worker died): what was stored is reused, not made again.
    stub.calls.clear()
    again = await builders.activity_env(2).run(acts.generate_images, lane)
    assert [o.status for o in again.images] == ["generated", "failed", "retry", "generated"]
    assert [o.reused for o in again.images] == [True, False, False, True]
    assert sorted(stub.calls) == ["busy now", "refuse this"]
