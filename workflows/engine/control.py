"""One run status and its transitions, shared by every workflow kind (DESIGN §4).

running ──pause──▶ paused ──resume──▶ running
   │                  │
   └──cancel──▶ cancelling ──(in-flight items settle)──▶ cancelled
running ──(all items settled)──▶ completed | failed

A pause has a reason: `user`, `insufficient_credits` or `budget_exhausted`. A cancelling
run never pauses again. A credit check that was asked before the latest resume and refused
after it does not pause the run: the resume (after a top-up) answers it, and the item asks
again (`refused_before_resume`). The final status shows only once the finishing
activities are done, so whoever reads `completed` also sees the log closed and the
notification sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.common import Frozen

T = TypeVar("T")
# Histories recorded before this rule paused again on a refusal from before a resume.
PATCH_STALE_REFUSAL = "credit-refusals-from-before-a-resume-do-not-pause"
PauseReason = Literal["user", "insufficient_credits", "budget_exhausted"]
Status = Literal["running", "paused", "cancelling", "completed", "cancelled", "failed"]
FINAL: tuple[Status, ...] = ("completed", "cancelled", "failed")


class ControlInput(Frozen):
    """Input of the pause / resume / cancel signals."""

    reason: str | None = None
    budget_credits: int | None = None  # resume may raise a run's budget


class ProgressRequest(Frozen):
    """Input of the progress and credits queries (nothing to ask for yet)."""


class ControlState(BaseModel):
    """Carried across continue-as-new: only ever gains fields with defaults."""

    paused: bool = False
    pause_reason: str | None = None
    pauses: int = 0
    cancel_requested: bool = False
    stop_published: bool = False  # the workers know the run is paused or cancelled
    stop_row: bool = False  # a stop was ever published (its row goes when the run ends)
    resumes: int = 0  # resume signals taken: a credit check remembers the count it began at


class RunControl:
    """The status rules over a ControlState; the workflow's signals call these."""

    def __init__(self, state: ControlState) -> None:
        self.state = state
        self.temporal_cancel = False  # cancelled from the Temporal UI/CLI
        self.outcome: Status | None = None  # decided before the finishing activities
        self.final: Status | None = None  # shown once they are done

    def pause(self, reason: str = "user") -> bool:
        """True when this call paused the run (it was running)."""
        s = self.state
        if s.cancel_requested or s.paused or self.outcome is not None:
            return False
        s.paused, s.pause_reason, s.pauses = True, reason, s.pauses + 1
        return True

    def resume(self) -> None:
        self.state.paused, self.state.pause_reason = False, None
        self.state.resumes += 1

    @property
    def epoch(self) -> int:
        """Taken before a credit check, for `refused_before_resume`."""
        return self.state.resumes

    def refused_before_resume(self, epoch: int) -> bool:
        """A check begun at `epoch` was refused, and a resume came while it ran: the
        refusal predates the top-up the resume stands for, so it must not pause the run
        (on two busy cores the refusal can reach the workflow after the resume does)."""
        return self.state.resumes != epoch and workflow.patched(PATCH_STALE_REFUSAL)

    def cancel(self) -> None:
        self.state.cancel_requested, self.state.paused = True, False

    @property
    def claiming(self) -> bool:
        """New items may start."""
        return not self.state.paused and not self.state.cancel_requested

    @property
    def stop_out_of_step(self) -> bool:
        """The workers' view of whether the run is stopped differs from the truth."""
        return (not self.claiming) != self.state.stop_published

    async def shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Bookkeeping (open, plan, reserve; release, log, notify) runs to its end even if
        Temporal cancels the workflow meanwhile; the cancel is honoured right after, so a
        cancel never leaves a hold locked or a log open."""
        task = asyncio.ensure_future(coro)
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled():  # the worker is evicting the workflow: let it go
                    raise
                self.temporal_cancel = True
                self.cancel()
                if task.done():
                    return task.result()

    def decide(self, outcome: Status) -> None:
        self.outcome = outcome

    def finished(self) -> None:
        self.final = self.outcome

    @property
    def status(self) -> Status:
        if self.final is not None:
            return self.final
        if self.state.cancel_requested:
            return "cancelling"
        return "paused" if self.state.paused else "running"

    @property
    def decided(self) -> Status:
        """The outcome while finishing, else the live status."""
        return self.outcome or self.status

    @property
    def pause_reason(self) -> str | None:
        return self.state.pause_reason if self.status == "paused" else None
