"""HoldSweeperWorkflow: release credit holds past their expiry, on a timer.

A run that was terminated (not cancelled) never releases its hold; the hold's expiry
bounds how long its credits stay locked, and this sweeper gives them back. It passes
workflow time to the activity, so the time-skipping test server can prove it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.common import Frozen
    from activities.ledger import ExpireHoldsInput, LedgerActivities


def sweeper_id(task_queue: str) -> str:
    """One sweeper per task queue: it lives where its workers poll, so a sweeper is never
    left on a queue nobody serves (holds are in the database; two sweepers are harmless)."""
    return f"igny8-hold-sweeper-{task_queue}"


class SweeperInput(Frozen):
    interval_seconds: int = 300
    sweeps_before_continue: int = 500
    released_total: int = 0


class SweeperStatus(Frozen):
    sweeps: int
    released_total: int
    last_sweep_at: datetime | None = None


@workflow.defn
class HoldSweeperWorkflow:
    def __init__(self) -> None:
        self._sweeps = 0
        self._released = 0
        self._last: datetime | None = None

    @workflow.query
    def status(self, _: Frozen | None = None) -> SweeperStatus:
        return SweeperStatus(
            sweeps=self._sweeps, released_total=self._released, last_sweep_at=self._last
        )

    @workflow.run
    async def run(self, inp: SweeperInput) -> SweeperStatus:
        self._released = inp.released_total
        for _ in range(inp.sweeps_before_continue):
            self._last = workflow.now()
            out = await workflow.execute_activity_method(
                LedgerActivities.expire_holds,
                ExpireHoldsInput(now=self._last),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
                summary="Release expired credit holds",
            )
            self._sweeps += 1
            self._released += out.released
            await workflow.sleep(timedelta(seconds=inp.interval_seconds))
        workflow.continue_as_new(inp.model_copy(update={"released_total": self._released}))
