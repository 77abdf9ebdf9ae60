"""The paths of an automation run, driven against the fake activities (tests/fakes.py):
the fast workflow tests assert on them and tests/histories/record.py records them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.client import Client, WorkflowHandle

from tests.fakes import World
from tests.workflow_paths import Ran, finish, wait_until, world_until
from workflows.automation_run import AutomationRunInput, AutomationRunWorkflow
from workflows.engine.control import ControlInput

RunPath = Callable[[Client, str, World], Awaitable[Ran]]


async def start_run(client: Client, queue: str, **overrides: Any) -> WorkflowHandle[Any, Any]:
    run_id = f"automation-1-7-{uuid.uuid4().hex[:12]}"
    inp = AutomationRunInput(run_id=run_id, account_id=1, site_id=7, **overrides)
    return await client.start_workflow(AutomationRunWorkflow.run, inp, id=run_id, task_queue=queue)


def stage(progress: Any, name: str) -> dict[str, Any]:
    return next(s for s in progress.stages if s["name"] == name)


async def happy(client: Client, queue: str, world: World) -> Ran:
    world.keywords = 40
    return await finish(await start_run(client, queue))


async def pause_in_content(client: Client, queue: str, world: World) -> Ran:
    """Pause while articles are being written: none starts while paused."""
    world.keywords = 40
    gate = world.function_gates["generate_content"] = asyncio.Event()
    handle = await start_run(client, queue)
    await world_until(world, lambda w: w.waiting.get("generate_content", 0) > 0)
    await handle.signal("pause", ControlInput(reason="user"))
    await wait_until(handle, lambda p: p.status == "paused")
    gate.set()
    await world_until(world, lambda w: w.waiting.get("generate_content", 0) == 0 and w.active == 0)
    written = len(world.made.get("generate_content", []))
    await asyncio.sleep(0.3)
    assert len(world.made.get("generate_content", [])) == written, "an article started while paused"
    total = stage(await _progress(handle), "content")["total"]
    assert written < total, "the pause landed after every article was written"
    await handle.signal("resume", ControlInput())
    return await finish(handle)


async def cancel_in_images(client: Client, queue: str, world: World) -> Ran:
    """Cancel while the child image batches work: they stop, holds are released."""
    world.keywords = 40
    world.max_concurrency = 1  # a child has images left to claim when the cancel comes
    world.image_gate = asyncio.Event()  # image generations wait
    handle = await start_run(client, queue)
    await wait_until(handle, lambda p: bool(p.active_batches))
    await world_until(world, lambda w: w.waiting.get("generate_images", 0) > 0)
    await handle.signal("cancel", ControlInput(reason="user"))
    await wait_until(handle, lambda p: p.status == "cancelling")
    world.image_gate.set()
    return await finish(handle)


async def cancel_from_temporal(client: Client, queue: str, world: World) -> Ran:
    world.keywords = 40
    world.max_concurrency = 1
    world.image_gate = asyncio.Event()
    handle = await start_run(client, queue)
    await wait_until(handle, lambda p: bool(p.active_batches))
    await world_until(world, lambda w: w.waiting.get("generate_images", 0) > 0)
    await handle.cancel()
    await wait_until(handle, lambda p: p.status == "cancelling")
    world.image_gate.set()
    return await finish(handle)


async def out_of_credits(client: Client, queue: str, world: World) -> Ran:
    """Funded for part of the run: it pauses with insufficient_credits; a top-up and
    resume finish it with nothing processed twice."""
    world.keywords = 40
    world.balance = 60
    handle = await start_run(client, queue)
    await wait_until(handle, lambda p: p.status == "paused")
    await wait_until(handle, lambda p: _text_in_flight(world) == 0 and not p.active_batches)
    world.balance += 5000
    await handle.signal("resume", ControlInput())
    return await finish(handle)


async def refused_before_resume(client: Client, queue: str, world: World) -> Ran:
    """A credit hold refused before a top-up reaches the run only after the user's resume:
    the run asks again and goes on instead of pausing a second time."""
    world.keywords = 40
    world.balance = 1
    world.refusal_gate = asyncio.Event()
    handle = await start_run(client, queue)
    await world_until(world, lambda w: w.refusals_held > 0)
    await handle.signal("pause", ControlInput(reason="user"))
    await wait_until(handle, lambda p: p.status == "paused")
    world.balance += 5000
    await handle.signal("resume", ControlInput())
    await wait_until(handle, lambda p: p.status == "running")
    world.refusal_gate.set()
    settled = await wait_until(
        handle, lambda p: p.status == "completed" or p.pause_reason == "insufficient_credits"
    )
    if settled.status != "completed":
        await handle.terminate("paused again by a refusal from before the resume")
    return await finish(handle)


async def over_budget(client: Client, queue: str, world: World) -> Ran:
    world.keywords = 40
    handle = await start_run(client, queue, budget_credits=30)
    await wait_until(handle, lambda p: p.status == "paused")
    await wait_until(handle, lambda p: _text_in_flight(world) == 0)
    await handle.signal("resume", ControlInput(budget_credits=100_000))
    return await finish(handle)


async def continue_as_new(client: Client, queue: str, world: World) -> Ran:
    world.keywords = 60
    return await finish(await start_run(client, queue, history_limit=150))


async def plan_failure(client: Client, queue: str, world: World) -> Ran:
    world.fail_plan = "AI model 'gone' is not configured"
    return await finish(await start_run(client, queue))


def _text_in_flight(world: World) -> int:
    return world.active + sum(world.waiting.values())


async def _progress(handle: WorkflowHandle[Any, Any]) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(**await handle.query("progress"))


RUN_PATHS: dict[str, RunPath] = {
    "happy": happy,
    "pause_in_content": pause_in_content,
    "cancel_in_images": cancel_in_images,
    "cancel_temporal": cancel_from_temporal,
    "out_of_credits": out_of_credits,
    "refused_before_resume": refused_before_resume,
    "over_budget": over_budget,
    "continue_as_new": continue_as_new,
    "plan_failure": plan_failure,
}
