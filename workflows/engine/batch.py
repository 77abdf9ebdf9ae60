"""A stand-alone batch of one AI function over a list of items (an image batch, a text
batch): the lifecycle every such workflow shares, so the workflow class only plans, runs
one item and records itself.

start (open the log, plan, reserve; a refusal ends it as failed, nothing charged) → the
item loop → settle leftovers → release the hold → close the log, notify and record
together → the final status. A cancel from the Temporal UI or CLI is the cancel signal;
when the history is full the batch continues as new with its state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, Generic, NoReturn, TypeVar

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.engine.control import ControlState, RunControl, Status
from workflows.engine.items import ItemLoop, ItemWork, LoopState, StopPublisher
from workflows.engine.metering import Meter, MeterState
from workflows.engine.policies import DB_RETRY, DB_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from activities.common import Frozen
    from activities.runs import RunActivities, RunStopInput
    from domain.ai_functions import AIFunction

I = TypeVar("I")  # noqa: E741 (the item type)


class BatchState(BaseModel):
    """The engine's part of a batch's state; carried across continue-as-new (only gains
    fields with defaults). A workflow's own state extends it with its plan and items."""

    meter: MeterState = Field(default_factory=MeterState)
    control: ControlState = Field(default_factory=ControlState)
    loop: LoopState = Field(default_factory=LoopState)
    runs: int = 1


class BatchCounts(Frozen):
    """What every batch reports; each workflow names the fields for its items."""

    status: str
    pause_reason: str | None
    total: int
    done: int
    failed: int
    in_flight: int
    credits_reserved: int
    credits_used: int
    cost_usd: Decimal
    balance: int | None
    errors: list[str]
    working_on: list[int] = []  # the first few items being generated now


CHILD_FINISHED = "child_batch_finished"
CHILD_PAUSED = "child_batch_paused"


class ChildReport(Frozen):
    """What a batch started by a run (its parent) tells it, by signal: the parent may have
    continued as new meanwhile, and a signal reaches its current run."""

    batch_id: str
    status: str
    done: int = 0
    failed: int = 0
    credits_used: int = 0
    cost_usd: Decimal = Decimal("0")
    balance: int | None = None
    errors: list[str] = []
    pause_reason: str | None = None
    # The batch's resume count when the credit check behind a pause or a refused start
    # began: the parent drops a report older than a resume it sent (None: not a refusal).
    resumes: int | None = None


class MeteredBatch(Generic[I]):
    def __init__(
        self,
        fn: AIFunction,
        account_id: int,
        batch_id: str,
        state: BatchState,
        pending: list[I],
        work: ItemWork[I],
        *,
        concurrency: Callable[[], int],
        history_limit: int,
        on_change: Callable[[], None] = lambda: None,
        parent_id: str | None = None,
    ) -> None:
        self.fn = fn
        self.parent_id = parent_id
        self.batch_id = batch_id
        self.state = state
        self.control = RunControl(state.control)
        self.meter = Meter(fn, account_id, batch_id, state.meter, batch_id)
        self.stop = StopPublisher(self.control, self._publish_stop)
        self.loop = ItemLoop(
            pending,
            state.loop,
            self.control,
            self.meter,
            work,
            self.stop,
            on_pause=self._paused,
            concurrency=concurrency,
            history_limit=history_limit,
            on_change=on_change,
        )

    async def run(
        self,
        fresh: bool,
        start: Callable[[], Awaitable[bool]],
        record: Callable[[str], Awaitable[None]],
        roll: Callable[[], NoReturn],
    ) -> None:
        """Start (unless continued), work the items, finish; `roll` continues as new."""
        try:
            if fresh and not await self.control.shielded(start()):
                return
            finished = await self.loop.run()
        except asyncio.CancelledError:  # a cancel from the Temporal UI/CLI
            self.control.temporal_cancel = True
            self.control.cancel()
            await self.control.shielded(self.stop.sync())
            await workflow.wait_condition(lambda: self.loop.in_flight == 0)
            finished = True
        if not finished:
            self.state.runs += 1
            roll()
        await self.control.shielded(self._finish(record))
        if self.control.temporal_cancel:
            raise asyncio.CancelledError(f"{self.fn.run_label} cancelled")

    async def fail(
        self,
        reason: str,
        details: dict[str, int],
        record: Callable[[str], Awaitable[None]],
        refused_at: int | None = None,
    ) -> None:
        """End before any generation: log the error, notify, record; nothing was charged.
        `refused_at`: the resume count when the refused credit check began."""
        self.control.decide("failed")
        self.state.loop.errors = [reason]
        await self.meter.close("failed", dict(details), reason)
        await self.meter.notify("failed", self.fn.failed_title, reason, dict(details))
        await record("failed")
        self.control.finished()
        await self._tell_parent(CHILD_FINISHED, refused_at)

    async def _finish(self, record: Callable[[str], Awaitable[None]]) -> None:
        await self.loop.settle()
        releasing = []
        if self.meter.state.hold_ids:
            # A release changes what is reserved, never the balance the last charge
            # reported: it runs beside the closing steps instead of before them.
            releasing.append(self.meter.release())
        else:
            await self.meter.release()  # reads the balance for the summary
        self.control.decide(self._outcome())
        outcome = self.control.decided
        errors = self.state.loop.errors
        await asyncio.gather(
            *releasing,
            self.meter.close(
                outcome, self.summary(), "; ".join(errors) if outcome == "failed" else None
            ),
            self._notify_end(outcome),
            record(outcome),
        )
        if self.state.control.stop_row:
            await self._stop_activity(RunActivities.forget_run, False, "Forget the run's stop")
        self.control.finished()
        workflow.logger.info("%s %s: %s", self.fn.run_label, outcome, self.summary())
        await self._tell_parent(CHILD_FINISHED)

    async def _tell_parent(self, signal: str, refused_at: int | None = None) -> None:
        if self.parent_id is None:
            return
        c = self.counts()
        report = ChildReport(
            batch_id=self.batch_id,
            status=self.control.decided,
            done=c.done,
            failed=c.failed,
            credits_used=c.credits_used,
            cost_usd=c.cost_usd,
            balance=c.balance,
            errors=c.errors,
            pause_reason=self.control.state.pause_reason,
            resumes=refused_at,
        )
        try:
            await workflow.get_external_workflow_handle(self.parent_id).signal(signal, report)
        except ApplicationError:
            workflow.logger.warning("parent %s is gone; not told of %s", self.parent_id, signal)

    def _outcome(self) -> Status:
        s = self.state.loop
        if self.state.control.cancel_requested:
            return "cancelled"
        return "failed" if s.done == 0 and s.failed > 0 else "completed"

    async def _notify_end(self, outcome: str) -> None:
        s, m, fn = self.state.loop, self.meter.state, self.fn
        failed = f", {s.failed} failed" if s.failed else ""
        money = f"{m.credits_used} credits (${m.cost_usd:.4f} provider cost)"
        made = fn.done_phrase.format(n=s.done)
        if outcome == "completed":
            await self.meter.notify(
                "success", fn.done_title, f"{made} using {money}{failed}", self.summary()
            )
        elif outcome == "cancelled":
            text = f"Cancelled: {made[0].lower()}{made[1:]} using {money}{failed}"
            await self.meter.notify("cancelled", f"{fn.run_label} cancelled", text, self.summary())
        else:
            text = f"{fn.failed_title}: {s.failed} {fn.items_label} failed ({'; '.join(s.errors)})"
            await self.meter.notify("failed", fn.failed_title, text, self.summary())

    async def _publish_stop(self, stopped: bool) -> None:
        summary = "Stop waiting provider calls" if stopped else "Let provider calls go on"
        await self._stop_activity(RunActivities.set_run_stopped, stopped, summary)

    async def _stop_activity(self, activity: Any, stopped: bool, summary: str) -> None:
        await workflow.execute_activity_method(
            activity,
            RunStopInput(workflow_id=self.batch_id, stopped=stopped),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=summary,
        )

    async def _paused(self, reason: str, message: str) -> None:
        refused_at = self.control.epoch  # before the notification: a resume may come meanwhile
        label = self.fn.run_label
        await self.meter.notify_paused(
            reason,
            f"{label} paused",
            f"{label} paused: {message}. Top up and resume to go on.",
            {"batch_id": self.batch_id},
        )
        await self._tell_parent(CHILD_PAUSED, refused_at)

    def counts(self) -> BatchCounts:
        s, m = self.state.loop, self.meter.state
        return BatchCounts(
            status=self.control.status,
            pause_reason=self.control.pause_reason,
            total=s.total,
            done=s.done,
            failed=s.failed,
            in_flight=self.loop.in_flight,
            credits_reserved=0 if self.control.final else self.meter.reserved_left(),
            credits_used=m.credits_used,
            cost_usd=m.cost_usd,
            balance=m.balance,
            errors=list(s.errors),
            working_on=self.loop.working_on(),
        )

    def summary(self) -> dict[str, object]:
        c = self.counts()
        label = self.fn.items_label.replace(" ", "_")
        return {
            f"{label}_total": c.total,
            f"{label}_done": c.done,
            f"{label}_failed": c.failed,
            "credits_used": c.credits_used,
            "cost_usd": str(c.cost_usd),
            "balance": c.balance,
            "status": self.control.decided,
            "batch_id": self.batch_id,
        }

    def details(self) -> str:
        """The Temporal UI's "current details" line."""
        c = self.counts()
        return (
            f"**{c.status}** · {self.fn.items_label} {c.done}/{c.total} done, {c.failed} failed, "
            f"{c.in_flight} in flight · credits used {c.credits_used} · ${c.cost_usd:.4f} · "
            f"balance {c.balance}"
        )
