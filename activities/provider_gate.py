"""The worker's side of provider-wide concurrency (domain.provider_slots).

A call waits here for one of its model's slots, holds it only while the provider works,
and gives it back. A worker process holds slots in the database under its own token, and
per model its waiting calls form one queue, by priority and then in order of arrival (an
automation run gives its later stages the higher priority, so the first articles reach
the image model sooner and keep it fed, rather than every keyword being clustered first):

- a call that finishes hands its slot straight to the next call waiting in this process
  (no database write: the slot stays this process's), so the next call starts the moment
  the last one lands;
- with nobody waiting here, the slot goes back to the database, where other processes
  (and hosts) take it at once (PostgreSQL tells them with NOTIFY) or at their next poll
  (`poll_s`, SQLite: one host);
- waiting calls are served by one acquirer task per model, which takes as many free slots
  as it has callers in one statement, and reads first so a busy pool costs no write;
- a 429's back-off (set by any process) is waited out by every caller: the acquirer reads
  it at every poll, and a handed-on slot waits for it too;
- calls of a run that was paused or cancelled while they waited give up their turn
  (`SlotDeferred`), checked every `stop_check_s`.

The process renews all its leases in one statement; a killed worker's slots free
themselves when their leases expire (`lease_s`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core import metrics
from domain.provider_slots import Attempt, SlotPool
from models.db import utcnow

log = logging.getLogger("igny8.provider_gate")

POLL_S = 0.025
LEASE_S = 15.0  # renewed every 5 s while held; a dead worker's slots free within it
STOP_CHECK_S = 0.1
# With fast calls, a slot nobody here waits for stays this process's this long before it
# goes back to the database: the workflow's next call (or lane of calls) usually arrives
# within one round trip, and takes it without two writes. 0.05 s was shorter than that
# round trip on a busy 2-core machine (every lane paid a release and an acquire per slot);
# 0.25 s cut the machine's CPU per image at zero latency from 16.5-17 to 13-15.5 ms
# (bench/image_batch.py, six batches each). With slow calls (real models) the next call
# is already waiting somewhere, maybe in another process: the slot goes back at once.
LINGER_S = 0.25
SLOW_CALL_S = 0.25


class SlotDeferred(Exception):
    """The run paused or was cancelled while this call waited for a slot."""


class SlotWaitTimeout(Exception):
    """No slot within the wait allowed; the caller hands the item back to its workflow."""


@dataclass(eq=False)
class _Waiter:
    workflow_id: str | None
    future: asyncio.Future[int]
    priority: int = 0

    @property
    def waiting(self) -> bool:
        return not self.future.done()


class _Waiters:
    """Waiting calls, highest priority first, then first come first served."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, _Waiter]] = []
        self._seq = itertools.count()

    def append(self, waiter: _Waiter) -> None:
        heapq.heappush(self._heap, (-waiter.priority, next(self._seq), waiter))

    def first(self) -> _Waiter | None:
        return self._heap[0][2] if self._heap else None

    def popleft(self) -> _Waiter:
        return heapq.heappop(self._heap)[2]

    def __iter__(self) -> Iterator[_Waiter]:
        return (entry[2] for entry in self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)


@dataclass(eq=False)
class _Model:
    """One model's state in this process."""

    limit: int = 1
    waiters: _Waiters = field(default_factory=_Waiters)
    held: set[int] = field(default_factory=set)  # slots this process holds in the database
    spare: list[int] = field(default_factory=list)  # held, idle for a moment (see LINGER_S)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    stops_checked: float = 0.0
    backoff_read: float = 0.0
    stopped: set[str] = field(default_factory=set)  # runs seen stopped at the last check
    blocked_until: datetime | None = None
    hold_s: float | None = None  # moving average of how long a call holds its slot

    def next_waiter(self) -> _Waiter | None:
        while (first := self.waiters.first()) is not None and not first.waiting:
            self.waiters.popleft()
        return self.waiters.first()

    def waiting(self) -> int:
        return sum(1 for w in self.waiters if w.waiting)


class ProviderGate:
    """Slots of every model for one worker process."""

    def __init__(
        self,
        pool: SlotPool,
        run_blocking: Callable[..., Any],
        *,
        poll_s: float = POLL_S,
        lease_s: float = LEASE_S,
        stop_check_s: float = STOP_CHECK_S,
        linger_s: float = LINGER_S,
    ) -> None:
        """`run_blocking(fn, *args)` awaits `fn(*args)` off the event loop."""
        self.pool = pool
        self._blocking = run_blocking
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.stop_check_s = stop_check_s
        self.linger_s = linger_s
        self.token = uuid.uuid4().hex[:16]  # this process's holder name on slot rows
        self._models: dict[str, _Model] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._listening = threading.Event()  # set: stop listening
        self._listener: threading.Thread | None = None

    @asynccontextmanager
    async def slot(
        self,
        model: str,
        limit: int,
        *,
        workflow_id: str | None = None,
        max_wait_s: float = 60,
        priority: int = 0,
    ) -> AsyncIterator[int]:
        """Hold one of `model`'s `limit` slots for the block; among this process's
        waiting calls a higher `priority` is served first."""
        state = self._models.setdefault(model, _Model())
        state.limit = max(1, limit)
        slot_no = await self._wait(model, state, workflow_id, priority, max_wait_s)
        started = asyncio.get_running_loop().time()
        try:
            await self._wait_out_back_off(model, state)
            yield slot_no
        finally:
            held = asyncio.get_running_loop().time() - started
            avg = state.hold_s
            state.hold_s = held if avg is None else avg + 0.2 * (held - avg)
            await self._give_back(model, state, slot_no)

    async def back_off(self, model: str, seconds: float) -> None:
        """Every caller of `model`, in every process, waits `seconds` (a 429's Retry-After)."""
        metrics.RETRY_AFTER_SECONDS.labels(model).observe(seconds)
        until = await self._blocking(self.pool.back_off, model, seconds)
        state = self._models.setdefault(model, _Model())
        state.blocked_until = max(until, state.blocked_until or until)

    async def close(self) -> None:
        """Finish giving slots back, then stop the acquirers, the renewer and the listener."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._listening.set()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 2.0)
        tasks = [m.task for m in self._models.values() if m.task] + [self._renewer]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with suppress(asyncio.CancelledError, Exception):
                    await task

    # ---- waiting -------------------------------------------------------------------
    async def _wait(
        self, model: str, state: _Model, workflow_id: str | None, priority: int, max_wait_s: float
    ) -> int:
        if state.spare and state.next_waiter() is None:
            return state.spare.pop()  # a spare slot: no waiter, no future
        self._ensure_listener()
        waiter = _Waiter(workflow_id, asyncio.get_running_loop().create_future(), priority)
        state.waiters.append(waiter)
        state.wake.set()
        if state.task is None or state.task.done():
            state.task = asyncio.create_task(self._serve(model, state))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), max_wait_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            self._abandon(model, state, waiter)
            if isinstance(exc, TimeoutError):
                raise SlotWaitTimeout(f"no {model} slot free within {max_wait_s:g} s") from None
            raise

    def _ensure_listener(self) -> None:
        """Hear other workers' releases at once where the database can tell (PostgreSQL)."""
        if self._listener is not None:
            return
        loop = asyncio.get_running_loop()

        def heard(model: str) -> None:
            loop.call_soon_threadsafe(self._wake, model)

        self._listener = threading.Thread(
            target=self.pool.listen,
            args=(heard, self._listening),
            name="slot-listener",
            daemon=True,
        )
        self._listener.start()

    def _wake(self, model: str) -> None:
        state = self._models.get(model)
        if state is not None and state.waiters:
            state.wake.set()

    def _abandon(self, model: str, state: _Model, waiter: _Waiter) -> None:
        """A waiter that left: a slot granted to it meanwhile is passed on."""
        future = waiter.future
        if not future.done():
            future.cancel()
        elif not future.cancelled() and future.exception() is None:
            self._spawn(self._give_back(model, state, future.result()))

    async def _wait_out_back_off(self, model: str, state: _Model) -> None:
        if state.blocked_until is not None:
            delay = (state.blocked_until - utcnow()).total_seconds()
            if delay > 0:
                metrics.BACKOFF_WAIT_SECONDS.labels(model).observe(delay)
                await asyncio.sleep(delay)

    async def _serve(self, model: str, state: _Model) -> None:
        """Take free slots from the database for this process's waiters, in order."""
        loop = asyncio.get_running_loop()
        while state.next_waiter() is not None:
            state.wake.clear()
            while state.spare and state.next_waiter() is not None:
                self._hand_over(model, state, state.spare.pop())
            got = Attempt([])
            try:
                await self._defer_stopped(state)
                want = state.waiting()
                if want and len(state.held) < state.limit:
                    got = await self._blocking(
                        self.pool.try_acquire, model, state.limit, self.token, self.lease_s, want
                    )
                    state.blocked_until = got.blocked_until
                elif want and loop.time() - state.backoff_read >= self.poll_s:
                    # all slots are ours: only a handoff helps, but heed a back-off
                    state.backoff_read = loop.time()
                    state.blocked_until = await self._blocking(self.pool.blocked_until, model)
            except Exception:
                log.exception("provider slots for %s: database error; retrying", model)
            for slot_no in got.slots:
                state.held.add(slot_no)
                self._ensure_renewer()
                self._hand_over(model, state, slot_no)
            if not got.slots:
                await self._sleep(state, got)

    def _hand_over(self, model: str, state: _Model, slot_no: int) -> None:
        """Give a held slot to the next waiter, or keep it spare for a moment."""
        if slot_no >= state.limit:  # the model's limit came down meanwhile
            state.held.discard(slot_no)
            self._spawn(self._release(model, slot_no))
            return
        waiter = state.next_waiter()
        if waiter is not None:
            state.waiters.popleft()
            waiter.future.set_result(slot_no)
            return
        if state.hold_s is None or state.hold_s >= SLOW_CALL_S:
            state.held.discard(slot_no)
            self._spawn(self._release(model, slot_no))
            return
        state.spare.append(slot_no)
        self._spawn(self._release_if_idle(model, state, slot_no))

    async def _release_if_idle(self, model: str, state: _Model, slot_no: int) -> None:
        await asyncio.sleep(self.linger_s)
        if slot_no in state.spare:
            state.spare.remove(slot_no)
            state.held.discard(slot_no)
            await self._release(model, slot_no)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sleep(self, state: _Model, got: Attempt) -> None:
        """Until a new waiter, the next poll, or the end of the model's back-off."""
        delay = self.poll_s * random.uniform(0.8, 1.2)
        if got.blocked_until is not None:
            await asyncio.sleep(max(delay, (got.blocked_until - utcnow()).total_seconds()))
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(state.wake.wait(), delay)

    async def _defer_stopped(self, state: _Model) -> None:
        """Waiters of paused or cancelled runs give up their turn (checked now and then)."""
        loop = asyncio.get_running_loop()
        if loop.time() - state.stops_checked < self.stop_check_s:
            return
        state.stops_checked = loop.time()
        runs = {w.workflow_id for w in state.waiters if w.workflow_id and w.waiting}
        state.stopped = await self._blocking(self.pool.stopped, runs) if runs else set()
        for waiter in state.waiters:
            if waiter.waiting and waiter.workflow_id in state.stopped:
                waiter.future.set_exception(SlotDeferred(f"run {waiter.workflow_id} stopped"))

    # ---- holding -------------------------------------------------------------------
    async def _give_back(self, model: str, state: _Model, slot_no: int) -> None:
        """A finished call's slot: to the next caller waiting here (a stopped run's caller
        gives up its turn), else back to the database."""
        while (waiter := state.next_waiter()) is not None and waiter.workflow_id in state.stopped:
            state.waiters.popleft()
            waiter.future.set_exception(SlotDeferred(f"run {waiter.workflow_id} stopped"))
        self._hand_over(model, state, slot_no)

    async def _release(self, model: str, slot_no: int) -> None:
        try:
            await self._blocking(self.pool.release, model, [slot_no], self.token)
        except Exception:  # the lease expires on its own; never fail the call for this
            log.exception("could not release %s slot %s; its lease will expire", model, slot_no)

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while any(m.held for m in self._models.values()):
            await asyncio.sleep(self.lease_s / 3)
            for model, state in list(self._models.items()):
                if not state.held:
                    continue
                try:
                    await self._blocking(
                        self.pool.renew, model, list(state.held), self.token, self.lease_s
                    )
                except Exception:
                    log.exception("could not renew provider slot leases of %s", model)
