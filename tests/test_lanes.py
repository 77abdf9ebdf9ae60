"""Provider lanes: one provider call per lane, across threads and processes, never stranded,
and the batch that uses them keeps the provider at its concurrency limit and no more."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from activities.lanes import LaneLocks
from domain.reconcile import reconcile
from tests import builders
from tests.temporal_fixtures import WorkerCtx
from workflows.client import start_image_batch


async def test_one_holder_per_lane_and_lanes_are_independent(tmp_path: Path):
    lanes = LaneLocks(tmp_path)
    release_a = asyncio.Event()
    a_holds = asyncio.Event()

    async def a() -> None:
        async with lanes.hold("b1", 0):
            a_holds.set()
            await release_a.wait()

    first = asyncio.create_task(a())
    await a_holds.wait()
    b = asyncio.create_task(lanes.hold("b1", 0).__aenter__())
    async with asyncio.timeout(10):
        async with lanes.hold("b1", 1):  # another lane: no waiting for a
            pass
    await asyncio.sleep(0.2)
    assert not b.done()  # the same lane: b waits while a holds it
    release_a.set()
    await first
    async with asyncio.timeout(10):
        await b  # and gets it once a lets go
    lanes.close()


async def test_a_cancelled_waiter_gives_the_lane_back(tmp_path: Path, monkeypatch):
    from activities import lanes as lanes_module

    lanes = LaneLocks(tmp_path)
    release = asyncio.Event()
    held = asyncio.Event()

    async def holder() -> None:
        async with lanes.hold("b1", 0):
            held.set()
            await release.wait()

    holding = asyncio.create_task(holder())
    await held.wait()
    # Know when the waiter's thread is really in flock (not merely queued), so the cancel
    # below exercises the give-back path rather than dropping a call that never ran.
    in_flock = threading.Event()
    real_acquire = lanes_module._acquire

    def spying_acquire(path: Path) -> int:
        in_flock.set()
        return real_acquire(path)

    monkeypatch.setattr(lanes_module, "_acquire", spying_acquire)
    waiter = asyncio.create_task(lanes.hold("b1", 0).__aenter__())
    async with asyncio.timeout(10):
        while not in_flock.is_set():
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    waiter.cancel()  # its thread stays blocked in flock, and gets the lock later
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holding
    # if the cancelled waiter kept the lock, this would block forever
    async with asyncio.timeout(10):
        async with lanes.hold("b1", 0):
            pass
    lanes.close()


def test_any_batch_id_maps_inside_the_lanes_folder(tmp_path: Path):
    lanes = LaneLocks(tmp_path)
    folders = {lanes.folder(b) for b in ["..", "a/b", "a_b", "/etc", "image-batch-1-abc"]}
    assert len(folders) == 5
    assert all(f.parent == tmp_path / ".lanes" for f in folders)
    lanes.remove("..")
    assert tmp_path.exists()


async def test_a_killed_process_never_strands_its_lane(tmp_path: Path):
    lanes = LaneLocks(tmp_path)
    path = lanes.folder("b1") / "0.lock"
    script = textwrap.dedent(
        f"""
        import fcntl, os, sys, time
        os.makedirs({str(path.parent)!r}, exist_ok=True)
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        waiting = asyncio.create_task(lanes.hold("b1", 0).__aenter__())
        await asyncio.sleep(0.2)
        assert not waiting.done()  # the other process holds the lane
        proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(5):
            await waiting  # the OS dropped the dead process's lock
    finally:
        proc.kill()
        proc.wait()
    lanes.close()


def test_remove_drops_the_batch_folder(tmp_path: Path):
    lanes = LaneLocks(tmp_path)

    async def touch() -> None:
        async with lanes.hold("image-batch-1-abc", 3):
            pass

    asyncio.run(touch())
    assert (lanes.folder("image-batch-1-abc") / "3.lock").exists()
    lanes.remove("image-batch-1-abc")
    assert not lanes.folder("image-batch-1-abc").exists()
    lanes.close()


@pytest.mark.temporal
async def test_batch_queues_behind_lanes_but_never_exceeds_the_provider_limit(wctx: WorkerCtx):
    limit = 3
    wctx.sim.configure(latency_s=0.2, max_concurrency=limit)  # one call too many is a 429
    builders.billing_config(wctx.engine, "0.01")
    cfg = builders.model_config(wctx.engine, max_concurrency=limit)
    acct, _ = builders.account(wctx.engine, credits=1000)
    site = builders.site(wctx.engine, acct, max_in_article_images=1)
    task_ids = [
        builders.task_with_content(wctx.engine, acct, site.id, f"Topic {i}")[0].id for i in range(6)
    ]
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    result = await handle.result()
    assert (result.status, result.images_done, result.images_failed) == ("completed", 12, 0)
    stats = wctx.sim.stats()
    assert stats["max_in_flight"] == limit and stats["rejected_429"] == 0, stats
    # Before the first image came back, two per lane were already dispatched: one at the
    # provider, one queued behind it.
    generations: set[int] = set()
    async for event in handle.fetch_history_events():
        done = event.activity_task_completed_event_attributes
        if event.HasField("activity_task_completed_event_attributes") and (
            done.scheduled_event_id in generations
        ):
            break
        scheduled = event.activity_task_scheduled_event_attributes
        if scheduled.activity_type.name == "generate_image":
            generations.add(event.event_id)
    assert len(generations) == 2 * limit
    assert not LaneLocks(wctx.settings.media_dir).folder(handle.id).exists()
    assert reconcile(wctx.engine) == []


async def test_a_retry_waiting_in_the_lane_reuses_what_the_attempt_ahead_stored(
    engine, sim, tmp_path: Path
):
    """Attempt 1 outlived its heartbeat and still holds the lane when attempt 2 starts; it
    stores the image and lets go. Attempt 2 must not pay the provider for it again."""
    from decimal import Decimal

    from sqlmodel import Session

    from activities.images import ImageActivities
    from models import Image
    from providers.registry import ProviderRegistry

    acct, image = builders.pending_image(engine, prompt="a teapot")
    providers = ProviderRegistry(simulator_url=sim.url, timeout_s=10)
    acts = ImageActivities(engine, providers, tmp_path / "media")
    env = builders.activity_env(attempt=2)
    inp = builders.generate_input(acct, image, lane=0)
    first_attempt = LaneLocks(tmp_path / "media")
    async with first_attempt.hold(inp.batch_id, 0):
        retry = asyncio.create_task(env.run(acts.generate_image, inp))
        await asyncio.sleep(0.3)
        assert not retry.done()  # waiting behind attempt 1
        stored = tmp_path / "media" / "stored.png"
        stored.write_bytes(b"\x89PNG from attempt 1")
        with Session(engine) as s:
            row = s.get(Image, image.id)
            row.status, row.file_path, row.cost_usd = "generated", str(stored), Decimal("0.04")
            s.add(row)
            s.commit()
    out = await asyncio.wait_for(retry, 10)
    assert (out.status, out.reused, out.file_path) == ("generated", True, str(stored))
    assert sim.stats()["images_generated"] == 0  # the provider was not paid twice
    await providers.aclose()
    first_attempt.close()
    acts.lanes.close()


def test_lanes_go_deep_for_slow_calls_and_shallow_for_fast_ones():
    from activities.images import GenerateImageOutput
    from workflows.image_batch import LANE_DEPTH, BatchState, ImageBatchWorkflow

    wf = ImageBatchWorkflow()
    wf._s = BatchState(task_log_id=1)
    assert wf._lane_depth() == LANE_DEPTH == 2  # real image models take seconds

    def landed(seconds: float, **extra) -> None:
        out = GenerateImageOutput(image_id=1, status="generated", provider_s=seconds, **extra)
        wf._record_call(out)

    landed(0.01)
    assert wf._lane_depth() == 1  # a fast provider: queueing would only crowd the workers
    for _ in range(20):
        landed(1.0)
    assert wf._lane_depth() == 2
    before = wf._s.call_s
    landed(0.0, reused=True)  # a reused image says nothing about the provider
    wf._record_call(GenerateImageOutput(image_id=2, status="failed", error="refused"))
    assert wf._s.call_s == before
    # the average lives in the state that continue-as-new carries
    assert BatchState.model_validate(wf._s.model_dump()).call_s == before


def test_the_worker_refuses_a_folder_whose_locks_do_not_exclude(tmp_path: Path, monkeypatch):
    from activities import lanes as lanes_module

    LaneLocks(tmp_path).check()  # a local disk: fine
    monkeypatch.setattr(lanes_module.fcntl, "flock", lambda fd, op: None)  # a no-op mount
    with pytest.raises(RuntimeError, match="do not exclude"):
        LaneLocks(tmp_path).check()

    def failing(fd: int, op: int) -> None:
        raise OSError(37, "No locks available")

    monkeypatch.setattr(lanes_module.fcntl, "flock", failing)
    with pytest.raises(RuntimeError, match="file locks fail"):
        LaneLocks(tmp_path).check()


def test_the_check_leaves_no_file_behind(tmp_path: Path):
    LaneLocks(tmp_path).check()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.temporal
async def test_a_pause_stops_the_images_still_queued_in_their_lanes(wctx: WorkerCtx):
    """Deep lanes hold C images at the provider and C queued behind them. A pause lets the
    C at the provider land and sends the queued ones back to pending, unpaid."""
    from tests.test_image_batch import FINISHED, setup_tasks, wait_for
    from workflows.image_batch import ControlInput, ImageBatchWorkflow

    limit = 2
    wctx.sim.configure(latency_s=1.5)  # slow: lanes stay deep
    acct, cfg, task_ids = setup_tasks(wctx, credits=100, n_tasks=5, max_concurrency=limit)
    handle = await start_image_batch(
        wctx.client, wctx.task_queue, account_id=acct, task_ids=task_ids, model=cfg.model_name
    )
    early = await wait_for(handle, lambda p: p.images_done >= limit)
    await handle.signal(ImageBatchWorkflow.pause, ControlInput(reason="user"))
    paused = await wait_for(
        handle,
        lambda p: (p.status == "paused" and p.images_in_flight == 0) or p.status in FINISHED,
    )
    assert paused.status == "paused", paused
    # Without the stop, the queued wave would land too: early + 2 × limit.
    assert paused.images_done <= early.images_done + limit, (early, paused)
    assert wctx.sim.stats()["images_generated"] == paused.images_done  # no call wasted
    assert paused.images_failed == 0 and paused.credits_used == 2 * paused.images_done
    await handle.signal(ImageBatchWorkflow.resume, ControlInput())
    result = await handle.result()
    assert (result.status, result.images_done, result.credits_used) == ("completed", 10, 20)
    assert wctx.sim.stats()["images_generated"] == 10
    assert reconcile(wctx.engine) == []
