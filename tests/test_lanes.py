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
