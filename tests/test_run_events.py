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
from domain.progress_feed import Note


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
    async for chunk in events.stream(key, fetch, side):
        line = chunk.decode()
        if line.startswith("event: progress"):
            out.append(json.loads(line.split("data: ", 1)[1]))
    return out


async def test_a_side_that_never_answers_does_not_hold_up_the_runs_progress():
    events, run, side = RunEvents(tick_s=0.001, send_gap_s=0), Counter(last=5), StuckSide()
    got = await asyncio.wait_for(snapshots(events, "run-1", run.fetch, side), 10)
    assert [s["done"] for s in got] == [1, 2, 3, 4, 5]  # every change, in order
    assert got[-1]["status"] == "completed"
    assert side.asked == 1 and all(s["side"] == 0 for s in got)  # still waiting on it


async def test_side_numbers_are_sent_as_soon_as_they_come():
    events, side = RunEvents(tick_s=0.001, send_gap_s=0), StuckSide()
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


# ---- pushed notes (domain/progress_feed.py) --------------------------------------------
class Pushed:
    """A run whose poll answers `polled` (each once, then the last again) and whose
    pushed progress is shown as it came, with the API's balance added."""

    def __init__(self, *polled: dict[str, Any]) -> None:
        self.polled = list(polled)
        self.fetches = 0
        self.hold: asyncio.Event | None = None  # set: the second poll waits for it
        self.applied: list[int] = []  # the versions of the notes made into snapshots

    async def fetch(self) -> dict[str, Any]:
        self.fetches += 1
        if self.fetches == 2 and self.hold is not None:
            await self.hold.wait()
        return self.polled.pop(0) if len(self.polled) > 1 else self.polled[0]

    async def apply(self, progress: dict[str, Any] | None) -> dict[str, Any]:
        assert progress is not None
        self.applied.append(progress["version"])
        return {**progress, "balance": 5}


def running(version: int) -> dict[str, Any]:
    return {"status": "running", "version": version, "done": version}


async def watch_pushing(
    events: RunEvents, key: str, run: Pushed, pushes: dict[int, list[Note]]
) -> list[dict[str, Any]]:
    """Watch `key`; after the n-th snapshot, push the notes of `pushes[n]`."""
    got: list[dict[str, Any]] = []
    async for chunk in events.stream(key, run.fetch, apply=run.apply):
        line = chunk.decode()
        if line.startswith("event: progress"):
            got.append(json.loads(line.split("data: ", 1)[1]))
            for note in pushes.get(len(got), []):
                events.pushed(note)
    return got


async def test_a_pushed_note_is_shown_at_once_and_an_older_one_is_not():
    events, run = RunEvents(tick_s=60, send_gap_s=0), Pushed(running(1))
    pushes = {
        1: [Note("run-p", 3, running(3))],
        2: [Note("run-p", 2, running(2)), Note("run-p", 4, {**running(4), "status": "completed"})],
    }
    got = await asyncio.wait_for(watch_pushing(events, "run-p", run, pushes), 10)
    assert [(s["version"], s["status"]) for s in got] == [
        (1, "running"),
        (3, "running"),
        (4, "completed"),
    ]
    assert got[1]["balance"] == 5  # made by `apply`, not by a poll ...
    assert run.fetches == 1  # ... which waits its 60 s tick: only the first was asked


async def test_a_poll_answer_older_than_a_pushed_note_is_not_shown():
    run = Pushed(running(1), running(2), {**running(9), "status": "completed"})
    run.hold = asyncio.Event()
    events = RunEvents(tick_s=0.01, send_gap_s=0)

    async def release_later() -> None:
        while events.notes_heard == 0:
            await asyncio.sleep(0.005)
        run.hold.set()  # the poll that started before the note answers after it

    helper = asyncio.create_task(release_later())
    got = await asyncio.wait_for(
        watch_pushing(events, "run-o", run, {1: [Note("run-o", 5, running(5))]}), 10
    )
    await helper
    versions = [s["version"] for s in got]
    assert versions == [1, 5, 9], versions  # version 2, answered late, never went out


async def test_changes_within_the_send_gap_go_out_together_and_the_end_at_once():
    gap = 0.3
    events, run = RunEvents(tick_s=60, send_gap_s=gap), Pushed(running(1))
    loop = asyncio.get_running_loop()
    got: list[tuple[float, dict[str, Any]]] = []
    final_pushed_at: list[float] = []

    async def applied(version: int) -> None:
        while version not in run.applied:
            await asyncio.sleep(0.001)

    async def push_inside_the_gap() -> None:
        events.pushed(Note("run-g", 2, running(2)))
        await applied(2)  # shown to nobody yet: the first snapshot went out just now
        events.pushed(Note("run-g", 3, running(3)))
        await applied(3)

    async def end_inside_the_next_gap() -> None:
        final_pushed_at.append(loop.time())
        events.pushed(Note("run-g", 4, {**running(4), "status": "completed"}))

    helpers = []

    async def watch() -> None:
        async for chunk in events.stream("run-g", run.fetch, apply=run.apply):
            line = chunk.decode()
            if line.startswith("event: progress"):
                got.append((loop.time(), json.loads(line.split("data: ", 1)[1])))
                if len(got) == 1:
                    helpers.append(asyncio.create_task(push_inside_the_gap()))
                elif len(got) == 2:
                    helpers.append(asyncio.create_task(end_inside_the_next_gap()))
        await asyncio.gather(*helpers)

    await asyncio.wait_for(watch(), 10)
    assert [s["version"] for _, s in got] == [1, 3, 4]  # 2 and 3 went out as one snapshot
    assert got[1][0] - got[0][0] >= gap * 0.9  # ... when the gap was over
    assert got[2][0] - final_pushed_at[0] < gap / 2  # the end does not wait for the gap


async def test_the_poll_slows_while_a_runs_notes_keep_coming():
    events, run = RunEvents(tick_s=0.01, send_gap_s=0), Pushed(running(1))
    heard = 0

    async def notes() -> None:
        nonlocal heard
        for version in range(2, 40):
            events.pushed(Note("run-s", version, running(version)))
            heard += 1
            await asyncio.sleep(0.02)
        events.pushed(Note("run-s", 40, {**running(40), "status": "completed"}))

    async def watch() -> list[dict[str, Any]]:
        return await watch_pushing(events, "run-s", run, {})

    loop = asyncio.get_running_loop()
    started = loop.time()
    watcher = asyncio.create_task(watch())
    while run.fetches == 0:
        await asyncio.sleep(0.001)
    await notes()
    got = await asyncio.wait_for(watcher, 10)
    took = loop.time() - started
    assert got[-1]["version"] == 40
    # at its 10 ms tick the poll would have asked about 100 times a second; fed, it asks
    # once a second (and once before the first note)
    assert run.fetches <= 2 + took, (run.fetches, took)
