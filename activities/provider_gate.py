"""The worker's side of provider-wide concurrency (domain.provider_slots).

A call waits here for one of its model's slots, holds it only while the provider works,
and gives it back. Per worker process and model, waiting calls form one FIFO queue served
by one acquirer task, so a busy pool costs one database read per poll per process, not one
per waiting call:

- a slot freed in this process wakes the acquirer at once (the next call starts a few
  milliseconds after the last one lands: two short transactions);
- a slot freed in another process (or host) is noticed at the next poll (`poll_s`);
- a model backing off after a 429 is waited out by every caller;
- calls of a run that was paused or cancelled while they waited give up their turn
  (`SlotDeferred`), checked every `stop_check_s`.

Leases are renewed in one statement per process while calls run; a killed worker's slots
free themselves when their leases expire.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from domain.provider_slots import Attempt, SlotPool
from models.db import utcnow

T = TypeVar("T")
log = logging.getLogger("igny8.provider_gate")

POLL_S = 0.05
LEASE_S = 15.0  # renewed every 5 s while a call runs; a dead worker's slot frees within it
STOP_CHECK_S = 0.1


class SlotDeferred(Exception):
    """The run paused or was cancelled while this call waited for a slot."""


class SlotWaitTimeout(Exception):
    """No slot within the wait allowed; the caller hands the item back to its workflow."""


@dataclass(eq=False)
class _Waiter:
    holder: str
    workflow_id: str | None
    future: asyncio.Future[int]
    abandoned: bool = False


@dataclass(eq=False)
class _Queue:
    limit: int = 1
    waiters: deque[_Waiter] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    stops_checked: float = 0.0


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
    ) -> None:
        """`run_blocking(fn, *args)` awaits `fn(*args)` off the event loop."""
        self.pool = pool
        self._blocking = run_blocking
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.stop_check_s = stop_check_s
        self._token = uuid.uuid4().hex[:12]
        self._seq = itertools.count(1)
        self._queues: dict[str, _Queue] = {}
        self._held: dict[str, tuple[str, int]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()

    @asynccontextmanager
    async def slot(
        self, model: str, limit: int, *, workflow_id: str | None = None, max_wait_s: float = 60
    ) -> AsyncIterator[int]:
        """Hold one of `model`'s `limit` slots for the block."""
        slot_no, holder = await self._wait(model, max(1, limit), workflow_id, max_wait_s)
        self._held[holder] = (model, slot_no)
        self._ensure_renewer()
        try:
            yield slot_no
        finally:
            del self._held[holder]
            await self._release(model, slot_no, holder)

    async def back_off(self, model: str, seconds: float) -> None:
        """Every caller of `model`, in every process, waits `seconds` (a 429's Retry-After)."""
        await self._blocking(self.pool.back_off, model, seconds)

    async def close(self) -> None:
        tasks = [q.task for q in self._queues.values() if q.task] + [self._renewer]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with suppress(asyncio.CancelledError, Exception):
                    await task

    # ---- waiting -------------------------------------------------------------------
    async def _wait(
        self, model: str, limit: int, workflow_id: str | None, max_wait_s: float
    ) -> tuple[int, str]:
        queue = self._queues.setdefault(model, _Queue())
        queue.limit = limit
        waiter = _Waiter(
            holder=f"{self._token}:{next(self._seq)}",
            workflow_id=workflow_id,
            future=asyncio.get_running_loop().create_future(),
        )
        queue.waiters.append(waiter)
        if queue.task is None or queue.task.done():
            queue.task = asyncio.create_task(self._serve(model, queue))
        try:
            slot_no = await asyncio.wait_for(asyncio.shield(waiter.future), max_wait_s)
        except TimeoutError:
            self._abandon(model, waiter)
            raise SlotWaitTimeout(f"no {model} slot free within {max_wait_s:g} s") from None
        except asyncio.CancelledError:
            self._abandon(model, waiter)
            raise
        return slot_no, waiter.holder

    def _abandon(self, model: str, waiter: _Waiter) -> None:
        """A waiter that left: a slot granted to it meanwhile goes straight back."""
        waiter.abandoned = True
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            task = asyncio.ensure_future(self._release(model, future.result(), waiter.holder))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _serve(self, model: str, queue: _Queue) -> None:
        """Hand slots to this process's waiters for `model`, first come first served."""
        while True:
            while queue.waiters and queue.waiters[0].abandoned:
                queue.waiters.popleft()
            if not queue.waiters:
                return
            try:
                await self._defer_stopped(queue)
                if not queue.waiters:
                    continue
                head = queue.waiters[0]
                got: Attempt = await self._blocking(
                    self.pool.try_acquire, model, queue.limit, head.holder, self.lease_s
                )
            except Exception:
                log.exception("provider slots for %s: database error; retrying", model)
                got = Attempt(None)
            if got.slot_no is not None:
                queue.waiters.popleft()
                if head.abandoned:
                    await self._release(model, got.slot_no, head.holder)
                else:
                    head.future.set_result(got.slot_no)
                continue
            await self._sleep(queue, got)

    async def _sleep(self, queue: _Queue, got: Attempt) -> None:
        """Until a local release, the next poll, or the end of the model's back-off."""
        delay = self.poll_s * random.uniform(0.8, 1.2)
        if got.blocked_until is not None:
            delay = max(delay, (got.blocked_until - utcnow()).total_seconds())
            await asyncio.sleep(delay)  # a local release does not end a back-off
            return
        queue.wake.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(queue.wake.wait(), delay)

    async def _defer_stopped(self, queue: _Queue) -> None:
        """Waiters of paused or cancelled runs give up their turn (checked now and then)."""
        loop = asyncio.get_running_loop()
        if loop.time() - queue.stops_checked < self.stop_check_s:
            return
        queue.stops_checked = loop.time()
        runs = {w.workflow_id for w in queue.waiters if w.workflow_id and not w.abandoned}
        if not runs:
            return
        stopped = await self._blocking(self.pool.stopped, runs)
        if not stopped:
            return
        kept: deque[_Waiter] = deque()
        for waiter in queue.waiters:
            if waiter.abandoned or waiter.future.done():
                continue
            if waiter.workflow_id in stopped:
                waiter.future.set_exception(SlotDeferred(f"run {waiter.workflow_id} stopped"))
            else:
                kept.append(waiter)
        queue.waiters = kept

    # ---- holding -------------------------------------------------------------------
    async def _release(self, model: str, slot_no: int, holder: str) -> None:
        try:
            await self._blocking(self.pool.release, model, slot_no, holder)
        except Exception:  # the lease expires on its own; never fail the call for this
            log.exception("could not release %s slot %s; its lease will expire", model, slot_no)
        queue = self._queues.get(model)
        if queue is not None:
            queue.wake.set()

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self._blocking(self.pool.renew, list(self._held), self.lease_s)
            except Exception:
                log.exception("could not renew provider slot leases")
