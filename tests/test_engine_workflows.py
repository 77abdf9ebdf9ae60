"""The workflow rules, fast: every activity mocked by name (tests/fakes.py) on the
time-skipping server. Each path of each batch workflow, and what must hold on it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.fakes import World
from tests.workflow_paths import PATHS, WORKFLOW_STARTS, Ran, start_images, world_until
from worker import WORKFLOWS
from workflows.engine.items import WORKING_SHOWN
from workflows.image_batch import LANE_MIN_CONCURRENCY, LANE_SIZE

ITEMS = {"ImageBatchWorkflow": 12, "TextBatchWorkflow": 12}  # 6 tasks × 2 images; 12 articles
KINDS = list(WORKFLOW_STARTS)


@pytest_asyncio.fixture
async def fake_env(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[tuple[str, World]]:
    world = World()
    queue = f"fake-{uuid.uuid4().hex}"
    async with Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=world.activities(),
    ):
        yield queue, world


async def run_path(env: WorkflowEnvironment, fake_env, kind: str, path: str) -> tuple[Ran, World]:
    queue, world = fake_env
    ran = await PATHS[path](WORKFLOW_STARTS[kind])(env.client, queue, world)
    return ran, world


def credits_each(world: World, kind: str) -> int:
    return world.credits_per_image if kind == "ImageBatchWorkflow" else world.credits_per_text


def assert_settled(world: World) -> None:
    """Every hold released, every log closed, each key charged at most once."""
    assert all(not h.open for h in world.holds.values())
    assert all("status" in log for log in world.logs.values())
    assert len(world.charges) == len(set(world.charges))


@pytest.mark.parametrize("kind", KINDS)
async def test_happy_path_charges_every_item_once_after_it_lands(time_skipping_env, fake_env, kind):
    ran, world = await run_path(time_skipping_env, fake_env, kind, "happy")
    total = ITEMS[kind]
    assert (ran.result.status, _done(ran.result), _failed(ran.result)) == ("completed", total, 0)
    assert len(world.charges) == total and world.balance == 1000 - total * credits_each(world, kind)
    generated = [i for e, i in world.events if e == "generated"]
    for item in generated:  # charge order: never before the item landed
        assert world.events.index(("generated", item)) < world.events.index(("charged", item))
    assert world.note_types()[-1].endswith("_success")
    assert_settled(world)


@pytest.mark.parametrize("kind", KINDS)
async def test_claims_stop_at_two_calls_per_provider_slot(time_skipping_env, fake_env, kind):
    queue, world = fake_env
    world.gate = asyncio.Event()
    handle = await WORKFLOW_STARTS[kind](time_skipping_env.client, queue)
    await world_until(world, lambda w: w.active == 2 * w.max_concurrency)
    await asyncio.sleep(0.2)  # several workflow tasks: nothing more is claimed
    assert world.active == 2 * world.max_concurrency == world.started
    world.gate.set()
    assert (await handle.result()).status == "completed"
    assert world.peak == 2 * world.max_concurrency


async def test_progress_names_the_first_images_in_flight_and_none_once_done(
    time_skipping_env, fake_env
):
    queue, world = fake_env
    world.gate = asyncio.Event()
    handle = await WORKFLOW_STARTS["ImageBatchWorkflow"](time_skipping_env.client, queue)
    await world_until(world, lambda w: w.active == 2 * w.max_concurrency)
    progress = await handle.query("progress")
    # claimed in plan order: tasks 1, 2, ... with images n = 0, 1 each (ids task*100 + n)
    assert progress["working_on"] == [100, 101, 200][:WORKING_SHOWN]
    assert progress["images_in_flight"] == 2 * world.max_concurrency
    world.gate.set()
    result = await handle.result()
    assert result.status == "completed" and result.working_on == []


@pytest.mark.parametrize("kind", KINDS)
async def test_pause_claims_nothing_new_and_resume_finishes(time_skipping_env, fake_env, kind):
    ran, world = await run_path(time_skipping_env, fake_env, kind, "pause_resume")
    assert ran.result.status == "completed" and _done(ran.result) == ITEMS[kind]
    assert len(world.charges) == ITEMS[kind]
    assert world.stopped == set()  # told the workers on pause, and again on resume
    assert_settled(world)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["cancel_signal", "cancel_temporal"])
async def test_cancel_lets_in_flight_land_charges_only_them_and_releases(
    time_skipping_env, fake_env, kind, how
):
    ran, world = await run_path(time_skipping_env, fake_env, kind, how)
    if how == "cancel_temporal":
        assert isinstance(ran.result, WorkflowFailureError)
        progress = await ran.handle.query("progress")
        done, status = _done(progress), progress["status"]
    else:
        done, status = _done(ran.result), ran.result.status
    assert status == "cancelled"
    assert 0 < done == len(world.charges) == world.started < ITEMS[kind]
    assert [log["status"] for log in world.logs.values()] == ["cancelled"]
    assert world.note_types()[-1].endswith("_cancelled")
    assert_settled(world)


@pytest.mark.parametrize("kind", KINDS)
async def test_credits_running_out_pause_and_resume_after_top_up_charges_each_once(
    time_skipping_env, fake_env, kind
):
    ran, world = await run_path(time_skipping_env, fake_env, kind, "out_of_credits")
    assert ran.result.status == "completed" and _done(ran.result) == ITEMS[kind]
    kinds = world.note_types()
    assert kinds[0].endswith("_paused") and kinds[-1].endswith("_success"), kinds
    assert len(world.charges) == ITEMS[kind] == world.started
    assert_settled(world)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_charge_refused_before_the_resume_does_not_pause_the_run_again(
    time_skipping_env, fake_env, kind
):
    ran, world = await run_path(time_skipping_env, fake_env, kind, "refused_before_resume")
    assert not isinstance(ran.result, WorkflowFailureError), f"paused again: {ran.result.cause}"
    assert ran.result.status == "completed" and _done(ran.result) == ITEMS[kind], ran.result
    assert not any(k.endswith("_paused") for k in world.note_types())  # only the user paused
    assert len(world.charges) == ITEMS[kind] == world.started  # the refused ones, charged once
    assert_settled(world)


@pytest.mark.parametrize("kind", KINDS)
async def test_history_stays_bounded_by_continuing_as_new(time_skipping_env, fake_env, kind):
    ran, world = await run_path(time_skipping_env, fake_env, kind, "continue_as_new")
    assert len(ran.run_ids) == 2, "the batch never continued as new"
    assert ran.result.status == "completed" and _done(ran.result) == ITEMS[kind]
    assert len(world.charges) == ITEMS[kind] and len(world.logs) == 1
    assert_settled(world)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", ["plan_failure", "refused_at_start"])
async def test_a_batch_that_cannot_start_fails_cleanly_and_charges_nothing(
    time_skipping_env, fake_env, kind, path
):
    ran, world = await run_path(time_skipping_env, fake_env, kind, path)
    assert ran.result.status == "failed" and ran.result.errors
    assert world.charges == [] and world.started == 0
    assert world.note_types() == [world.note_types()[0]] and world.note_types()[0].endswith(
        "_failed"
    )
    assert [log["status"] for log in world.logs.values()] == ["error"]
    assert_settled(world)


@pytest.mark.parametrize("kind", KINDS)
async def test_items_that_fail_are_not_charged(time_skipping_env, fake_env, kind):
    ran, world = await run_path(time_skipping_env, fake_env, kind, "some_items_fail")
    assert (_done(ran.result), _failed(ran.result)) == (ITEMS[kind] - 2, 2)
    assert len(world.charges) == ITEMS[kind] - 2
    assert ran.result.status == "completed" and len(ran.result.errors) == 2


async def test_fast_calls_on_a_wide_model_go_out_in_lanes_and_each_image_is_charged_once(
    time_skipping_env, fake_env
):
    # the first lane fails whole (its images go alone, rechecked); the last task's two
    # images are refused for now inside a lane (each is retried alone)
    ran, world = await run_path(
        time_skipping_env, fake_env, "ImageBatchWorkflow", "fast_wide_model"
    )
    result = ran.result
    images = 30 * world.images_per_task
    assert (result.status, result.images_done, result.images_failed) == ("completed", images, 0)
    # the first calls go alone (their speed is not known yet); once fast, lanes of up to 4
    assert len(world.lanes) >= 5 and all(1 <= len(lane) <= LANE_SIZE for lane in world.lanes)
    assert any(len(lane) == LANE_SIZE for lane in world.lanes)
    laned = [i for lane in world.lanes[1:] for i in lane]
    assert len(laned) == len(set(laned)), "an image went out in two lanes"
    assert sorted(world.rechecked) == sorted(world.lanes[0])  # alone, looking first
    assert {3000, 3001} <= set(laned) and not world.refused_in_lane  # retried alone
    generated = [i for e, i in world.events if e == "generated"]
    assert sorted(generated) == sorted(set(generated)) and len(generated) == images
    assert len(world.charges) == images == len(set(world.charges))
    assert world.balance == 1000 - images * world.credits_per_image
    assert_settled(world)


async def test_slow_calls_or_a_narrow_model_send_every_image_alone(time_skipping_env, fake_env):
    queue, world = fake_env
    world.max_concurrency = LANE_MIN_CONCURRENCY  # wide, but each call takes a second
    handle = await start_images(time_skipping_env.client, queue, task_ids=list(range(1, 31)))
    assert (await handle.result()).images_done == 30 * world.images_per_task
    queue2 = f"{queue}-narrow"
    narrow = World(max_concurrency=LANE_MIN_CONCURRENCY - 1, provider_s=0.01)
    async with Worker(
        time_skipping_env.client,
        task_queue=queue2,
        workflows=list(WORKFLOWS),
        activities=narrow.activities(),
    ):
        handle = await start_images(time_skipping_env.client, queue2, task_ids=list(range(1, 31)))
        assert (await handle.result()).images_done == 30 * narrow.images_per_task
    assert world.lanes == [] and narrow.lanes == []


def _done(p) -> int:
    p = p if isinstance(p, dict) else p.model_dump()
    return p.get("images_done", p.get("items_done"))


def _failed(p) -> int:
    p = p if isinstance(p, dict) else p.model_dump()
    return p.get("images_failed", p.get("items_failed"))
