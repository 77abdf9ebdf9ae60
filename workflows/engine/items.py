"""Bounded fan-out over a run's items: claim up to the limit, process, charge, settle.

An item is claimed only while the run is running, the provider has room (the model's
`max_concurrency` C, twice over while calls are slow: the second call of each slot waits
for it inside its activity, so it starts the moment the slot frees instead of one workflow
round trip later), and the history has room. When the history is full the loop stops
claiming, lets what is in flight finish, and says so: the workflow continues as new with
its state. Produced items are charged as they land; an item that cannot be charged pauses
the run (`insufficient_credits`) and is charged after `resume`, or withdrawn at the end:
never delivered free.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, Field
from temporalio import workflow

from workflows.engine.control import RunControl
from workflows.engine.metering import Charge, Meter
from workflows.engine.policies import HOLD_KEEPALIVE, message

I = TypeVar("I")  # noqa: E741 (the item type)
I_contra = TypeVar("I_contra", contravariant=True)

MAX_ERRORS_KEPT = 5
MAX_CONCURRENCY = 200
# Items in flight per provider slot: two calling or queued for the slot, one being charged
# (a charge is an activity round trip; counting it against the calls left slots idle).
IN_FLIGHT_PER_SLOT = 3
# What one item adds to the history at most: its activities (generate, charge, maybe mark
# failed or a withdraw) and the workflow tasks they wake. Claims stop at the history limit,
# then at most 3×C items drain: the limit plus 3×C×this bounds a run's history.
EVENTS_PER_ITEM_MAX = 12
# The default history limit: 3000 + 3 × 200 (the widest model) × 12 < 10,240 (the warning).
HISTORY_LIMIT = 3000
# Two calls per provider slot while calls are slow (a moving average of at least this);
# with a fast provider the second only crowds the workers.
DEEP_MIN_CALL_S = 0.25
CALL_AVERAGE_WEIGHT = 0.2
# How many of the items being generated a progress query names.
WORKING_SHOWN = 3


@dataclass(frozen=True)
class Produced:
    charge: Charge
    call_s: float | None = None  # the provider's seconds for a fresh call (None: reused)
    result: dict[str, Any] | None = None  # what it made (new ids), for the next stage


@dataclass(frozen=True)
class Failed:
    error: str


@dataclass(frozen=True)
class Deferred:
    """The item never reached the provider (the run stopped meanwhile): back to pending."""


ItemOutcome = Produced | Failed | Deferred


class LoopState(BaseModel):
    """Counters and leftovers; carried across continue-as-new (only gains defaults)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    errors: list[str] = Field(default_factory=list)
    uncharged: list[Charge] = Field(default_factory=list)
    call_s: float | None = None  # moving average of provider call seconds
    # What an uncharged item made, kept until it is charged (then it moves on) or withdrawn.
    held_results: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ItemWork(Protocol[I_contra]):
    """What a workflow plugs into the loop."""

    def item_id(self, item: I_contra) -> int: ...

    async def process(self, item: I_contra) -> ItemOutcome: ...

    async def withdraw(self, item_id: int, error: str) -> None: ...

    def delivered(self, item_id: int, result: dict[str, Any] | None) -> None:
        """The item was made and charged: what it made may move on (a no-op for a batch)."""
        ...


class StopPublisher:
    """Tells the workers when the run stops or goes on, so its calls still waiting for a
    provider slot give up their turn (one publisher per workflow, shared by its loops)."""

    def __init__(self, control: RunControl, publish: Callable[[bool], Coroutine[Any, Any, None]]):
        self.control = control
        self._publish = publish
        self._busy = False

    @property
    def needed(self) -> bool:
        return self.control.stop_out_of_step and not self._busy

    async def sync(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            while self.control.stop_out_of_step:
                stopped = not self.control.claiming
                await self._publish(stopped)
                self.control.state.stop_published = stopped
                self.control.state.stop_row = True
        finally:
            self._busy = False


class ItemLoop(Generic[I]):
    """Runs `work` over `pending` (a list in the workflow's state, consumed in place)."""

    def __init__(
        self,
        pending: list[I],
        state: LoopState,
        control: RunControl,
        meter: Meter,
        work: ItemWork[I],
        stop: StopPublisher,
        *,
        on_pause: Callable[[str, str], Coroutine[Any, Any, None]],
        concurrency: Callable[[], int],
        history_limit: int,
        more_coming: Callable[[], bool] = lambda: False,
        may_claim: Callable[[], bool] = lambda: True,
        before_claim: Callable[[], Coroutine[Any, Any, bool]] | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.pending = pending
        self.state = state
        self.control = control
        self.meter = meter
        self.work = work
        self.stop = stop
        self.on_pause = on_pause
        self.concurrency = concurrency
        self.history_limit = history_limit
        self.more_coming = more_coming
        self.may_claim = may_claim
        self.before_claim = before_claim
        self.on_change = on_change
        self.in_flight = 0
        # the items being generated now, oldest first (also shown as "working on")
        self.working_ids: dict[int, None] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- the loop ------------------------------------------------------------------
    async def run(self) -> bool:
        """True once every item is settled (or the run is cancelled and in-flight work is
        done); False when the history is full and in-flight work has drained."""
        while True:
            try:
                await workflow.wait_condition(self._wake, timeout=self._keepalive())
            except TimeoutError:
                await self.meter.keep_alive()
                continue
            if self.finished():
                return True
            if self.ready_to_roll():
                return False
            if self.stop.needed:
                await self.stop.sync()
                continue
            if self.before_claim is not None and not await self.before_claim():
                continue  # it paused the run (credits, budget) or cancelled it
            if not self.can_claim():  # things moved on while credits were reserved
                continue
            if self.state.uncharged:
                charge = self.state.uncharged.pop(0)
                self._spawn(self._charge_held(charge), charge.item_id)
            else:
                item = self.pending.pop(0)
                self._spawn(self._process(item), self.work.item_id(item))

    async def settle(self) -> None:
        """At the end: charge what was produced while credits ran short, or withdraw it."""
        while self.state.uncharged:
            await self._charge(self.state.uncharged.pop(0), final=True)

    def _wake(self) -> bool:
        return self.can_claim() or self.finished() or self.ready_to_roll() or self.stop.needed

    def _keepalive(self) -> Any:
        paused = self.control.state.paused and self.meter.state.hold_ids
        return HOLD_KEEPALIVE if paused else None

    # ---- rules ---------------------------------------------------------------------
    def width(self) -> int:
        return max(1, min(MAX_CONCURRENCY, self.concurrency()))

    def depth(self) -> int:
        """Two calls per slot until calls prove fast: real models take seconds."""
        call_s = self.state.call_s
        return 2 if call_s is None or call_s >= DEEP_MIN_CALL_S else 1

    def can_claim(self) -> bool:
        return (
            self.control.claiming
            and bool(self.pending or self.state.uncharged)
            and len(self.working_ids) < self.depth() * self.width()
            and self.in_flight < IN_FLIGHT_PER_SLOT * self.width()
            and not self.history_full()
            and self.may_claim()
        )

    def all_done(self) -> bool:
        return not self.pending and not self.state.uncharged and not self.more_coming()

    def finished(self) -> bool:
        return self.in_flight == 0 and (self.control.state.cancel_requested or self.all_done())

    def history_full(self) -> bool:
        info = workflow.info()
        return (
            info.get_current_history_length() > self.history_limit
            or info.is_continue_as_new_suggested()
        )

    def ready_to_roll(self) -> bool:
        return (
            self.in_flight == 0
            and not self.control.state.cancel_requested
            and not self.all_done()
            and self.history_full()
        )

    def working_on(self, limit: int = WORKING_SHOWN) -> list[int]:
        """The ids of the first `limit` items being generated now (for progress queries;
        in memory only: no item is in flight when the state is carried over)."""
        return list(itertools.islice(self.working_ids, limit))

    # ---- one item ------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None], item_id: int) -> None:
        self.in_flight += 1

        async def tracked() -> None:
            evicted = False
            try:
                await coro
            except Exception as err:  # an exhausted retry or a bug must not vanish silently
                self._fail(item_id, f"{type(err).__name__}: {message(err)}")
            except GeneratorExit:  # evicted from the worker's cache: no workflow loop left
                evicted = True
                raise
            finally:
                self.in_flight -= 1
                if not evicted:
                    self.on_change()

        task = asyncio.create_task(tracked())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, item: I) -> None:
        item_id = self.work.item_id(item)
        self.working_ids[item_id] = None
        try:
            out = await self.work.process(item)
        finally:
            self.working_ids.pop(item_id, None)
        if isinstance(out, Deferred):
            self.pending.insert(0, item)
        elif isinstance(out, Failed):
            self._fail(self.work.item_id(item), out.error)
        else:
            self._record_call(out.call_s)
            if await self._charge(out.charge, result=out.result):
                self.work.delivered(out.charge.item_id, out.result)

    async def _charge_held(self, charge: Charge) -> None:
        """An item made while credits ran short, charged after the top-up."""
        result = self.state.held_results.get(str(charge.item_id))
        if await self._charge(charge, result=result):
            self.state.held_results.pop(str(charge.item_id), None)
            self.work.delivered(charge.item_id, result)

    async def _charge(
        self, charge: Charge, final: bool = False, result: dict[str, Any] | None = None
    ) -> bool:
        """True once the item is charged (or free). One that cannot be charged waits for
        credits (the run pauses) or, at the end, is withdrawn: never delivered free."""
        epoch = self.control.epoch
        outcome = await self.meter.charge(charge)
        if outcome.error_type is None:
            self.state.done += 1
            return True
        if outcome.error_type == "InsufficientCredits" and not final:
            self.state.uncharged.append(charge)
            if result:
                self.state.held_results[str(charge.item_id)] = result
            if self.control.refused_before_resume(epoch):
                return False  # charged again at once, on the credits the resume came with
            if self.control.pause("insufficient_credits"):
                await self.on_pause("insufficient_credits", outcome.message)
            return False
        error = f"not charged, withdrawn: {outcome.message}"
        self.state.held_results.pop(str(charge.item_id), None)
        await self.work.withdraw(charge.item_id, error)
        self._fail(charge.item_id, error)
        return False

    def _record_call(self, call_s: float | None) -> None:
        if call_s is None:
            return
        avg = self.state.call_s
        self.state.call_s = call_s if avg is None else avg + CALL_AVERAGE_WEIGHT * (call_s - avg)

    def _fail(self, item_id: int, error: str) -> None:
        self.state.failed += 1
        line = f"{self.meter.fn.item_kind} {item_id}: {error}"
        self.state.errors = [*self.state.errors, line][-MAX_ERRORS_KEPT:]
