"""Every path of every workflow, driven against the fake activities (tests/fakes.py).

The fast workflow tests assert on them; tests/histories/record.py runs them to record
the histories the replay test keeps replaying. A path returns its handle (and the id of
the run whose history is worth keeping) once the workflow has closed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from tests.fakes import World
from workflows.engine.control import ControlInput
from workflows.image_batch import LANE_MIN_CONCURRENCY, ImageBatchInput, ImageBatchWorkflow
from workflows.text_batch import TextBatchInput, TextBatchWorkflow

TASKS = [1, 2, 3, 4, 5, 6]


@dataclass
class Ran:
    handle: WorkflowHandle[Any, Any]
    result: Any  # the result, or the WorkflowFailureError of a cancelled run
    run_ids: list[str]  # the runs whose histories to keep (first and last)


Path = Callable[[Client, str, World], Awaitable[Ran]]


async def wait_until(handle: WorkflowHandle[Any, Any], predicate: Callable[[Any], bool]) -> Any:
    """Poll the progress query (real time: the test server does not skip while polled)."""
    progress = None
    for _ in range(2000):
        progress = SimpleNamespace(**await handle.query("progress"))
        if predicate(progress):
            return progress
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition never held; last progress {progress}")


async def world_until(world: World, predicate: Callable[[World], bool]) -> None:
    for _ in range(2000):
        if predicate(world):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the world never reached the condition")


async def finish(handle: WorkflowHandle[Any, Any]) -> Ran:
    try:
        result: Any = await handle.result()
    except WorkflowFailureError as err:
        result = err
    runs = [handle.first_execution_run_id or ""]
    last = (await handle.describe()).run_id
    if last not in runs:
        runs.append(last)
    return Ran(handle, result, runs)


# ---- starting each kind ------------------------------------------------------------------
async def start_images(client: Client, queue: str, **overrides: Any) -> WorkflowHandle[Any, Any]:
    batch_id = f"image-batch-1-{uuid.uuid4().hex[:12]}"
    inp = ImageBatchInput(**{"batch_id": batch_id, "account_id": 1, "task_ids": TASKS, **overrides})
    return await client.start_workflow(ImageBatchWorkflow.run, inp, id=batch_id, task_queue=queue)


async def start_text(client: Client, queue: str, **overrides: Any) -> WorkflowHandle[Any, Any]:
    batch_id = f"text-batch-1-{uuid.uuid4().hex[:12]}"
    inp = TextBatchInput(
        **{
            "batch_id": batch_id,
            "account_id": 1,
            "function_name": "generate_image_prompts",
            "item_ids": list(range(1, 13)),
            **overrides,
        }
    )
    return await client.start_workflow(TextBatchWorkflow.run, inp, id=batch_id, task_queue=queue)


Start = Callable[..., Awaitable[WorkflowHandle[Any, Any]]]


# ---- the paths -------------------------------------------------------------------------
def happy(start: Start) -> Path:
    async def run(client: Client, queue: str, world: World) -> Ran:
        return await finish(await start(client, queue))

    return run


def pause_and_resume(start: Start) -> Path:
    async def run(client: Client, queue: str, world: World) -> Ran:
        world.gate = asyncio.Event()
        handle = await start(client, queue)
        await world_until(world, lambda w: w.active > 0)
        await handle.signal("pause", ControlInput(reason="user"))
        await wait_until(handle, lambda p: p.status == "paused")
        world.gate.set()
        await wait_until(handle, lambda p: _in_flight(p) == 0)
        started = world.started
        await asyncio.sleep(0.1)
        assert world.started == started, "a paused run started new work"
        await handle.signal("resume", ControlInput())
        return await finish(handle)

    return run


def cancel_by_signal(start: Start) -> Path:
    async def run(client: Client, queue: str, world: World) -> Ran:
        world.gate = asyncio.Event()
        handle = await start(client, queue)
        await world_until(world, lambda w: w.active > 0)
        await handle.signal("cancel", ControlInput(reason="user"))
        await wait_until(handle, lambda p: p.status == "cancelling")
        world.gate.set()
        return await finish(handle)

    return run


def cancel_from_temporal(start: Start) -> Path:
    async def run(client: Client, queue: str, world: World) -> Ran:
        world.gate = asyncio.Event()
        handle = await start(client, queue)
        await world_until(world, lambda w: w.active > 0)
        await handle.cancel()  # as the Temporal UI or `temporal workflow cancel` does
        await wait_until(handle, lambda p: p.status == "cancelling")
        world.gate.set()
        return await finish(handle)

    return run


def out_of_credits(start: Start) -> Path:
    """Another spender takes the credits mid-run (the hold was swept meanwhile): the run
    pauses with insufficient_credits; a top-up and resume finish it."""

    async def run(client: Client, queue: str, world: World) -> Ran:
        world.gate = asyncio.Event()
        handle = await start(client, queue)
        await world_until(world, lambda w: w.active > 0)
        for hold in world.holds.values():
            hold.open = False
        world.balance = 1
        world.gate.set()
        await wait_until(handle, lambda p: p.status == "paused" and _in_flight(p) == 0)
        world.balance += 1000
        await handle.signal("resume", ControlInput())
        return await finish(handle)

    return run


def refused_before_resume(start: Start) -> Path:
    """Charges refused while the run is paused reach it only after the top-up and the
    resume: the run must go on (the items are charged again), not pause once more."""

    async def run(client: Client, queue: str, world: World) -> Ran:
        world.gate, world.refusal_gate = asyncio.Event(), asyncio.Event()
        handle = await start(client, queue)
        await world_until(world, lambda w: w.active > 0)
        await handle.signal("pause", ControlInput(reason="user"))
        await wait_until(handle, lambda p: p.status == "paused")
        for hold in world.holds.values():  # another spender took the credits meanwhile
            hold.open = False
        world.balance = 1
        world.gate.set()  # the items in flight land; their charges are refused now ...
        await world_until(world, lambda w: w.refusals_held > 0)
        world.balance += 1000
        await handle.signal("resume", ControlInput())
        await wait_until(handle, lambda p: p.status == "running")
        world.refusal_gate.set()  # ... and reach the run after the resume
        await wait_until(
            handle, lambda p: p.status == "completed" or p.pause_reason == "insufficient_credits"
        )
        return await finish(handle)

    return run


def continue_as_new(start: Start) -> Path:
    async def run(client: Client, queue: str, world: World) -> Ran:
        return await finish(await start(client, queue, history_limit=40))

    return run


def plan_failure(start: Start) -> Path:
    async def run(client: Client, queue: str, world: World) -> Ran:
        world.fail_plan = "AI model 'gone' is not configured"
        return await finish(await start(client, queue))

    return run


def refused_at_start(start: Start) -> Path:
    async def run(client: Client, queue: str, world: World) -> Ran:
        world.balance = 1
        return await finish(await start(client, queue))

    return run


def some_items_fail(start: Start) -> Path:
    async def run(client: Client, queue: str, world: World) -> Ran:
        world.failing_items = {101, 201, 3, 4}  # image ids of tasks 1, 2; text items 3, 4
        return await finish(await start(client, queue))

    return run


def fast_wide_model(start: Start) -> Path:
    """Fast calls on a wide model: images go out in lanes (the first lane fails whole, two
    images are refused for now inside one); a text batch just runs wide."""

    async def run(client: Client, queue: str, world: World) -> Ran:
        world.max_concurrency, world.provider_s = LANE_MIN_CONCURRENCY, 0.01
        world.failing_lanes, world.refused_in_lane = 1, {3000, 3001}  # the last task's
        many = (
            {"task_ids": list(range(1, 31))}
            if start is start_images
            else {"item_ids": list(range(1, 61))}
        )
        return await finish(await start(client, queue, **many))

    return run


def _in_flight(progress: Any) -> int:
    return getattr(progress, "images_in_flight", None) or getattr(progress, "items_in_flight", 0)


PATHS: dict[str, Callable[[Start], Path]] = {
    "happy": happy,
    "pause_resume": pause_and_resume,
    "cancel_signal": cancel_by_signal,
    "cancel_temporal": cancel_from_temporal,
    "out_of_credits": out_of_credits,
    "refused_before_resume": refused_before_resume,
    "continue_as_new": continue_as_new,
    "plan_failure": plan_failure,
    "refused_at_start": refused_at_start,
    "some_items_fail": some_items_fail,
    "fast_wide_model": fast_wide_model,
}
WORKFLOW_STARTS: dict[str, Start] = {
    "ImageBatchWorkflow": start_images,
    "TextBatchWorkflow": start_text,
}
