"""Provider-wide concurrency (DESIGN §4): a model's max_concurrency holds for every batch,
worker process and host together, with nothing shared but the database."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from activities.provider_gate import ProviderGate, SlotDeferred, SlotWaitTimeout
from domain.provider_slots import SlotPool
from domain.reconcile import reconcile
from models.db import utcnow
from tests import builders
from tests.procs import start_worker, stop, worker_env
from tests.test_image_batch import deductions, generated_images, setup_tasks, stop_hold_sweeper
from workflows.client import start_image_batch

MODEL = "m-test"


# ---- the slot rows ---------------------------------------------------------------------
def test_never_more_held_than_the_limit_and_only_the_holder_releases(engine):
    pool = SlotPool(engine)
    assert pool.try_acquire(MODEL, 3, "proc-a", 30, want=2).slots == [0, 1]
    assert pool.try_acquire(MODEL, 3, "proc-b", 30, want=5).slots == [2]
    assert pool.try_acquire(MODEL, 3, "proc-c", 30).slots == []
    assert pool.in_use(MODEL) == 3
    assert pool.release(MODEL, [0], "proc-b") == 0  # not its slot
    assert pool.release(MODEL, [0], "proc-a") == 1 and pool.in_use(MODEL) == 2
    assert pool.try_acquire(MODEL, 3, "proc-c", 30).slots == [0]


def test_a_dead_holders_lease_expires_and_renewal_keeps_a_live_one(engine):
    now = [utcnow()]
    pool = SlotPool(engine, clock=lambda: now[0])
    assert pool.try_acquire(MODEL, 2, "dead", 10).slots == [0]
    assert pool.try_acquire(MODEL, 2, "live", 10).slots == [1]
    now[0] += timedelta(seconds=8)
    assert pool.renew(MODEL, [1], "live", 10) == 1
    assert pool.renew(MODEL, [0], "live", 10) == 0  # renews only its own
    now[0] += timedelta(seconds=5)  # dead's lease is over; live's was pushed out
    assert pool.try_acquire(MODEL, 2, "next", 10, want=2).slots == [0]


def test_a_back_off_holds_every_caller_and_is_never_shortened(engine):
    pool = SlotPool(engine)
    until = pool.back_off(MODEL, 30)
    pool.back_off(MODEL, 1)
    attempt = pool.try_acquire(MODEL, 5, "h", 30)
    assert attempt.slots == [] and attempt.blocked_until == until == pool.blocked_until(MODEL)
    assert pool.try_acquire("another-model", 5, "h", 30).slots == [0]


def test_concurrent_takers_from_many_threads_never_exceed_the_limit(engine):
    pool = SlotPool(engine)
    taken: list[int] = []
    lock = threading.Lock()

    def take(i: int) -> None:
        slots = pool.try_acquire(MODEL, 4, f"t{i}", 30, want=2).slots
        with lock:
            taken.extend(slots)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [0, 1, 2, 3]


# ---- the gate ------------------------------------------------------------------------
def _gate(engine, **kw) -> ProviderGate:
    async def blocking(fn, *args):
        return await asyncio.to_thread(fn, *args)

    return ProviderGate(SlotPool(engine), blocking, poll_s=0.02, stop_check_s=0.02, **kw)


async def test_calls_queue_for_slots_and_in_flight_never_exceeds_the_limit(engine):
    gate = _gate(engine)
    in_flight, peak, release = 0, 0, asyncio.Event()

    async def call() -> None:
        nonlocal in_flight, peak
        async with gate.slot(MODEL, 3, max_wait_s=30):
            in_flight += 1
            peak = max(peak, in_flight)
            await release.wait()
            in_flight -= 1

    tasks = [asyncio.create_task(call()) for _ in range(10)]
    while in_flight < 3:
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*tasks)
    await gate.close()  # gives the last slots back
    assert peak == 3 and gate.pool.in_use(MODEL) == 0


async def test_two_gates_share_the_limit_as_two_processes_would(engine):
    gates = [_gate(engine), _gate(engine)]
    held, peak, go = 0, 0, asyncio.Event()

    async def call(gate: ProviderGate) -> None:
        nonlocal held, peak
        async with gate.slot(MODEL, 2, max_wait_s=30):
            held += 1
            peak = max(peak, held)
            await go.wait()
            held -= 1

    tasks = [asyncio.create_task(call(gates[i % 2])) for i in range(8)]
    while held < 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # several polls: the other gate must not get a third slot
    assert held == 2
    go.set()
    await asyncio.gather(*tasks)
    assert peak == 2
    for gate in gates:
        await gate.close()


async def test_waiting_calls_are_served_by_priority_then_in_order_of_arrival(engine):
    """An automation run's later stages (higher priority) go before earlier ones' calls
    that waited longer; equal priorities keep their order."""
    gate = _gate(engine)
    served: list[str] = []

    async def call(name: str, priority: int) -> None:
        async with gate.slot(MODEL, 1, max_wait_s=30, priority=priority):
            served.append(name)

    async with gate.slot(MODEL, 1, max_wait_s=30):  # the one slot is busy: all queue
        tasks = []
        for name, priority in [("cluster-1", 0), ("ideas-1", 1), ("cluster-2", 0),
                               ("prompts-1", 3), ("ideas-2", 1), ("prompts-2", 3)]:  # fmt: skip
            tasks.append(asyncio.create_task(call(name, priority)))
            await asyncio.sleep(0.01)  # arrive in this order
    await asyncio.gather(*tasks)
    await gate.close()
    assert served == ["prompts-1", "prompts-2", "ideas-1", "ideas-2", "cluster-1", "cluster-2"]


async def test_a_stopped_runs_waiting_calls_give_up_their_turn(engine):
    gate = _gate(engine)
    async with gate.slot(MODEL, 1, workflow_id="run-a", max_wait_s=30):
        waiting = asyncio.create_task(_enter(gate, "run-b"))
        other = asyncio.create_task(_enter(gate, "run-c"))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(gate.pool.set_stopped, "run-b", True)
        with pytest.raises(SlotDeferred):
            await asyncio.wait_for(waiting, 5)
        assert not other.done()  # another run's call keeps its place
    assert await asyncio.wait_for(other, 5) == 0
    await gate.close()


async def test_no_slot_within_the_wait_hands_the_item_back(engine):
    gate = _gate(engine)
    async with gate.slot(MODEL, 1, max_wait_s=30):
        with pytest.raises(SlotWaitTimeout):
            async with gate.slot(MODEL, 1, max_wait_s=0.2):
                pass
    await gate.close()
    assert gate.pool.in_use(MODEL) == 0


async def _enter(gate: ProviderGate, run: str) -> int:
    async with gate.slot(MODEL, 1, workflow_id=run, max_wait_s=30) as slot:
        return slot


# ---- the whole deployment --------------------------------------------------------------
async def _three_batches_two_workers(engine, db_url, temporal_env, task_queue, sim, medias, extra):
    """Three batches at once on one model with C=5, two worker processes, a provider
    that answers 429 to a sixth call in flight."""
    sim.configure(latency_s=0.3, max_concurrency=5)
    acct, cfg, task_ids = setup_tasks(engine, credits=1000, n_tasks=30, max_concurrency=5)
    address = temporal_env.client.service_client.config.target_host
    workers = [
        start_worker(worker_env(db_url, address, task_queue, sim.url, media, **extra))
        for media in medias
    ]
    try:
        handles = [
            await start_image_batch(
                temporal_env.client,
                task_queue,
                account_id=acct,
                task_ids=task_ids[i::3],
                model=cfg.model_name,
            )
            for i in range(3)
        ]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 240)
    finally:
        for worker in workers:
            stop(worker, timeout_s=30)
        await stop_hold_sweeper(temporal_env.client, task_queue)
    stats = sim.stats()
    assert stats["rejected_429"] == 0, stats
    assert stats["max_in_flight"] == 5, stats  # the limit was used, and never exceeded
    assert [r.status for r in results] == ["completed"] * 3
    assert sum(r.images_done for r in results) == 60 == generated_images(engine)
    assert deductions(engine) == 60 and reconcile(engine) == []
    return acct


@pytest.mark.temporal
async def test_three_batches_two_workers_one_model_never_exceed_its_limit(
    engine, db_url, temporal_env, task_queue, sim, tmp_path
):
    media = tmp_path / "media"
    await _three_batches_two_workers(
        engine, db_url, temporal_env, task_queue, sim, [media, media], {}
    )


@pytest.mark.temporal
async def test_the_same_with_no_shared_disk_workers_on_separate_folders_and_s3(
    engine, db_url, temporal_env, task_queue, sim, tmp_path, s3_server
):
    from providers.s3_media_store import S3MediaStore
    from tests.s3_fixture import s3_settings

    prefix = f"t-{task_queue[-8:]}"
    medias: list[Path] = [tmp_path / "host-a", tmp_path / "host-b"]
    await _three_batches_two_workers(
        engine, db_url, temporal_env, task_queue, sim, medias, s3_server.settings_env(prefix)
    )
    assert not [p for m in medias if m.exists() for p in m.rglob("*") if p.is_file()]
    store = S3MediaStore.from_settings(s3_settings(s3_server, tmp_path / "api", s3_prefix=prefix))
    keys = builders.image_keys(engine)
    assert len(keys) == 60 and all(store.get(k)[:4] == b"\x89PNG" for k in keys)


async def test_a_429_in_one_process_holds_back_the_callers_of_the_other(engine):
    """A Retry-After seen by one worker slows every caller of that model, everywhere."""
    first, second = _gate(engine), _gate(engine)
    await first.back_off(MODEL, 0.5)
    started = asyncio.get_running_loop().time()
    async with second.slot(MODEL, 5, max_wait_s=30):
        waited = asyncio.get_running_loop().time() - started
    async with second.slot("other-model", 5, max_wait_s=30):
        other = asyncio.get_running_loop().time() - started - waited
    assert waited >= 0.4, waited  # the back-off's end, give or take clock rounding
    assert other < 0.3, other  # another model is not held back
    for gate in (first, second):
        await gate.close()
