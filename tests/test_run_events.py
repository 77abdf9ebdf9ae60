"""The shared event stream of a run (api/run_events.py): one poller per run, and the
numbers a snapshot adds from slower sources (its image batches) on their own task, so
they never hold up the run's own progress."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowQueryRejectedError
from temporalio.common import QueryRejectCondition
from temporalio.service import RPCError, RPCStatusCode

from api.routes.automation import LiveImages
from api.run_events import RunEvents


class Counter:
    """A run whose progress moves by one at each fetch, final at `last`."""

    def __init__(self, last: int) -> None:
        self.n = 0
        self.last = last

    async def fetch(self) -> dict[str, Any]:
        self.n = min(self.n + 1, self.last)
        status = "completed" if self.n == self.last else "running"
        return {"status": status, "done": self.n, "active_batches": ["b1"]}


class StuckSide:
    """Side numbers whose source does not answer until `answer` is set."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.asked = 0
        self.value = 0

    async def poll(self, main: dict[str, Any]) -> None:
        self.asked += 1
        await self.answer.wait()
        self.value = 7

    def merge(self, main: dict[str, Any]) -> dict[str, Any]:
        return {**main, "side": self.value}


async def snapshots(events: RunEvents, key: str, fetch, side=None) -> list[dict[str, Any]]:
    out = []
    async for line in events.stream(key, fetch, side):
        if line.startswith("event: progress"):
            out.append(json.loads(line.split("data: ", 1)[1]))
    return out


async def test_a_side_that_never_answers_does_not_hold_up_the_runs_progress():
    events, run, side = RunEvents(tick_s=0.001), Counter(last=5), StuckSide()
    got = await asyncio.wait_for(snapshots(events, "run-1", run.fetch, side), 10)
    assert [s["done"] for s in got] == [1, 2, 3, 4, 5]  # every change, in order
    assert got[-1]["status"] == "completed"
    assert side.asked == 1 and all(s["side"] == 0 for s in got)  # still waiting on it


async def test_side_numbers_are_sent_as_soon_as_they_come():
    events, side = RunEvents(tick_s=0.001), StuckSide()
    release = asyncio.Event()

    async def fetch() -> dict[str, Any]:
        if side.value:  # the side has answered: the run may end
            return {"status": "completed", "done": 1}
        await asyncio.sleep(0)
        release.set()
        return {"status": "running", "done": 1}

    async def answer_later() -> None:
        await release.wait()
        side.answer.set()

    helper = asyncio.create_task(answer_later())
    got = await asyncio.wait_for(snapshots(events, "run-2", fetch, side), 10)
    await helper
    # the run's progress did not move, the side's number did: that alone is a change
    assert [(s["status"], s["side"]) for s in got[:2]] == [("running", 0), ("running", 7)]
    assert got[-1]["status"] == "completed"


def test_live_images_sum_only_the_batches_the_run_still_lists():
    live = LiveImages(client=None)  # type: ignore[arg-type]
    live.counts = {"b1": (3, 2, 0), "b2": (5, 0, 1)}
    main = {"status": "running", "active_batches": ["b1", "b3"], "stages": []}
    merged = live.merge(main)
    # b2 has ended (its images are in the run's own counts), b3 has not answered yet
    assert merged["live_images"] == {"images_done": 3, "images_in_flight": 2, "images_failed": 0}
    assert "live_images" not in live.merge({**main, "active_batches": []})
    assert "live_images" not in live.merge({**main, "status": "completed"})


async def test_live_images_ask_every_running_batch_and_forget_the_silent_ones():
    class Handle:
        def __init__(self, batch_id: str) -> None:
            self.batch_id = batch_id

        async def query(self, _query: Any, reject_condition: Any = None) -> Any:
            if self.batch_id == "gone":
                raise RPCError("not found", RPCStatusCode.NOT_FOUND, b"")
            if self.batch_id == "closed":
                # a closed batch is never asked (its worker would replay it to answer)
                assert reject_condition == QueryRejectCondition.NOT_OPEN
                raise WorkflowQueryRejectedError(WorkflowExecutionStatus.COMPLETED)
            return SimpleNamespace(images_done=4, images_in_flight=1, images_failed=2)

    class Client:
        def get_workflow_handle_for(self, _run: Any, batch_id: str) -> Handle:
            return Handle(batch_id)

    live = LiveImages(Client())  # type: ignore[arg-type]
    live.counts = {"old": (9, 9, 9)}
    await live.poll({"active_batches": ["b1", "gone", "closed"]})
    assert live.counts == {"b1": (4, 1, 2)}
