"""Run-level activities that are not about one item: telling the workers a run stopped."""

from __future__ import annotations

from temporalio import activity

from activities.common import Frozen
from domain.provider_slots import SlotPool


class RunStopInput(Frozen):
    workflow_id: str
    stopped: bool


class RunActivities:
    def __init__(self, pool: SlotPool) -> None:
        self.pool = pool

    @activity.defn(name="set_run_stopped")
    def set_run_stopped(self, inp: RunStopInput) -> None:
        """Paused or cancelled (True), or resumed (False), for every worker to see: a call
        of the run still waiting for a provider slot then gives up its turn."""
        self.pool.set_stopped(inp.workflow_id, inp.stopped)

    @activity.defn(name="forget_run")
    def forget_run(self, inp: RunStopInput) -> None:
        """A finished run's stop row is no longer read by anyone."""
        self.pool.forget(inp.workflow_id)
