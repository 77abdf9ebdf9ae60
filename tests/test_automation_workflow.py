"""AutomationRunWorkflow's rules, fast: every activity mocked by name (tests/fakes.py),
the child image batches real workflows on the same fakes. On the dev server (real time:
the fakes answer at once, and the time-skipping server would skip past the heartbeat
timeouts of the calls a test holds back on purpose)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from core.temporal import DATA_CONVERTER
from domain import progress_feed
from tests.automation_paths import RUN_PATHS, start_run
from tests.fakes import World
from tests.workflow_paths import Ran, finish, wait_until, world_until
from worker import WORKFLOWS
from workflows.automation_run import AutomationRunWorkflow
from workflows.engine.batch import CHILD_PAUSED, ChildReport
from workflows.engine.control import ControlInput

KEYWORDS_PER_CALL = 20


@pytest_asyncio.fixture
async def run_env(temporal_env: WorkflowEnvironment) -> AsyncIterator[tuple[str, World]]:
    world = World()
    queue = f"fake-run-{uuid.uuid4().hex}"
    async with Worker(
        temporal_env.client,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=world.activities(),
        max_cached_workflows=50,
    ):
        yield queue, world


async def run(env: WorkflowEnvironment, run_env, path: str) -> tuple[Ran, World]:
    queue, world = run_env
    return await RUN_PATHS[path](env.client, queue, world), world


def stages(result) -> dict[str, SimpleNamespace]:
    data = result if isinstance(result, dict) else result.model_dump()
    return {s["name"]: SimpleNamespace(**s) for s in data["stages"]}


def expected_counts(world: World) -> dict[str, int]:
    """What 40 keywords become with the fakes: 2 batches → 4 clusters each ..."""
    batches = -(-world.keywords // KEYWORDS_PER_CALL)
    clusters = batches * (KEYWORDS_PER_CALL // 5)
    ideas = clusters * world.ideas_per_cluster
    return {"clustering": batches, "ideas": clusters, "tasks": ideas, "content": ideas,
            "image_prompts": ideas, "images": ideas, "review": ideas}  # fmt: skip


def assert_each_item_charged_once(world: World) -> None:
    assert len(world.charges) == len(set(world.charges))
    assert all(not h.open for h in world.holds.values()), "a hold was left open"


async def test_a_full_run_moves_every_item_through_every_stage_once(temporal_env, run_env):
    ran, world = await run(temporal_env, run_env, "happy")
    result = ran.result
    assert result.status == "completed" and result.current_stage is None
    want = expected_counts(world)
    got = stages(result)
    for name, total in want.items():
        assert (got[name].status, got[name].total, got[name].done) == ("completed", total, total), (
            name
        )
    assert world.finalized and len(world.finalized) == want["review"]
    text_charges = [k for k in world.charges if ":image:" not in k]
    assert len(text_charges) == sum(
        want[s] for s in ("clustering", "ideas", "content", "image_prompts")
    )
    images = [k for k in world.charges if ":image:" in k]
    assert len(images) == want["images"] * world.images_per_task
    assert_each_item_charged_once(world)
    # one task log per AI stage, one per child batch; each stage notified once
    functions = sorted(log["function"] for log in world.logs.values())
    assert functions.count("auto_cluster") == 1 and functions.count("generate_content") == 1
    assert all(log["status"] == "success" for log in world.logs.values())
    kinds = world.note_types()
    for kind in ("ai_cluster_success", "ai_ideas_success", "ai_content_success",
                 "ai_image_prompts_success", "automation_completed"):  # fmt: skip
        assert kinds.count(kind) == 1, (kind, kinds)
    batches = [log for log in world.logs.values() if log["function"] == "generate_images"]
    assert kinds.count("ai_image_success") == len(batches)
    assert (
        world.run_rows[result.run_id].status == "completed"
        and world.run_rows[result.run_id].finished
    )
    assert result.credits_used == 1000 - world.balance  # every stage and child counted


class Announced:
    """A progress feed that keeps what the workflows announce (domain/progress_feed.py)."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, int, Any]] = []

    def announce(self, key: str, version: int, progress: Any) -> None:
        self.notes.append((key, version, progress))


async def test_every_progress_change_is_dated_and_announced_but_never_when_replayed(
    temporal_env, run_env
):
    announced = Announced()
    progress_feed.install(announced)
    try:
        ran, _ = await run(temporal_env, run_env, "happy")
    finally:
        progress_feed.install(None)
    run_id = ran.result.run_id
    notes = [(version, p) for key, version, p in announced.notes if key == run_id]
    versions = [version for version, _ in notes]
    assert len(versions) > 20 and versions == list(range(1, len(versions) + 1)), versions
    # each announced progress is the one the version names, and each differs from the last
    assert all(p.version == v for v, p in notes)
    bodies = [p.model_copy(update={"version": None, "updated_at": None}) for _, p in notes]
    assert all(a != b for a, b in itertools.pairwise(bodies[:-1]))
    assert notes[-1][1].status == "completed"  # the last: the run's row has ended too
    assert (ran.result.version, ran.result.updated_at) == (versions[-1], notes[-1][1].updated_at)
    handle = temporal_env.client.get_workflow_handle_for(AutomationRunWorkflow.run, run_id)
    changes = await handle.query(AutomationRunWorkflow.progress_changes)
    assert changes.first_version + len(changes.times) - 1 == versions[-1]  # one execution
    assert changes.times == sorted(changes.times)
    assert [p.updated_at for _, p in notes] == changes.times
    # the query of the closed run replayed its history on the worker, and announced nothing
    replayed = Announced()
    progress_feed.install(replayed)
    try:
        history = await handle.fetch_history()
        await Replayer(workflows=list(WORKFLOWS), data_converter=DATA_CONVERTER).replay_workflow(
            history
        )
        final = await handle.query(AutomationRunWorkflow.progress)
    finally:
        progress_feed.install(None)
    assert replayed.notes == []
    assert (final.version, final.updated_at) == (versions[-1], changes.times[-1])


async def test_stages_overlap_an_article_is_written_before_clustering_ends(temporal_env, run_env):
    queue, world = run_env
    world.keywords = 100  # five clustering calls
    last_batch = world.item_gates[("auto_cluster", 4)] = asyncio.Event()
    handle = await start_run(temporal_env.client, queue)
    # the last keyword batch is still with the model while articles get written
    await world_until(world, lambda w: len(w.made.get("generate_content", [])) >= 3)
    assert 4 not in world.made["auto_cluster"]
    last_batch.set()
    ran = await finish(handle)
    assert ran.result.status == "completed"
    assert stages(ran.result)["clustering"].done == 5


async def test_pause_during_content_starts_no_article_and_resume_completes(temporal_env, run_env):
    ran, world = await run(temporal_env, run_env, "pause_in_content")
    assert ran.result.status == "completed"
    assert len(world.made["generate_content"]) == len(set(world.made["generate_content"]))
    assert_each_item_charged_once(world)


@pytest.mark.parametrize("path", ["cancel_in_images", "cancel_temporal"])
async def test_cancel_during_images_stops_the_children_and_releases_every_hold(
    temporal_env, run_env, path
):
    ran, world = await run(temporal_env, run_env, path)
    if path == "cancel_temporal":
        assert isinstance(ran.result, WorkflowFailureError)
        progress = await ran.handle.query("progress")
    else:
        progress = ran.result.model_dump()
    assert progress["status"] == "cancelled"
    assert world.run_rows[progress["run_id"]].status == "cancelled"
    assert "automation_cancelled" in world.note_types()
    children = [r for b, r in world.recorded.items() if b.startswith("image-batch-")]
    assert children and all(status == "cancelled" for status in children), world.recorded
    assert_each_item_charged_once(world)


async def test_running_out_of_credits_pauses_and_a_top_up_finishes_without_repeats(
    temporal_env, run_env
):
    ran, world = await run(temporal_env, run_env, "out_of_credits")
    assert ran.result.status == "completed"
    kinds = world.note_types()
    assert "automation_paused" in kinds and kinds[-1] == "automation_completed"
    for function, items in world.made.items():
        assert len(items) == len(set(items)), f"{function} processed an item twice"
    assert_each_item_charged_once(world)
    assert stages(ran.result)["review"].done == expected_counts(world)["review"]


async def test_a_hold_refused_before_the_resume_does_not_pause_the_run_again(temporal_env, run_env):
    ran, world = await run(temporal_env, run_env, "refused_before_resume")
    assert not isinstance(ran.result, WorkflowFailureError), "paused again after the resume"
    assert ran.result.status == "completed"
    assert world.note_types().count("automation_paused") == 0  # only the user paused it
    assert_each_item_charged_once(world)
    assert stages(ran.result)["review"].done == expected_counts(world)["review"]


async def test_a_budget_pauses_the_run_and_raising_it_goes_on(temporal_env, run_env):
    ran, world = await run(temporal_env, run_env, "over_budget")
    assert ran.result.status == "completed" and ran.result.budget_credits == 100_000
    assert any(k == "automation_paused" for k in world.note_types())
    assert_each_item_charged_once(world)


async def test_a_plan_that_fails_ends_the_run_failed_with_a_notification(temporal_env, run_env):
    ran, world = await run(temporal_env, run_env, "plan_failure")
    assert ran.result.status == "failed"
    assert world.note_types() == ["automation_failed"] and world.charges == []


async def test_history_stays_bounded_for_two_thousand_keywords(temporal_env, run_env):
    queue, world = run_env
    world.keywords = 2000
    world.ideas_per_cluster = 1
    world.balance = 10**7
    handle = await start_run(temporal_env.client, queue)
    ran = await finish(handle)
    assert ran.result.status == "completed"
    lengths = await history_lengths(temporal_env, handle.id)
    children = [b for b in world.recorded if b.startswith("image-batch-")]
    for child in children[:5]:
        lengths += await history_lengths(temporal_env, child)
    assert max(lengths) < 10_240, lengths
    assert len(lengths) > 5  # the run continued as new
    assert stages(ran.result)["review"].done == expected_counts(world)["review"]
    assert_each_item_charged_once(world)


async def history_lengths(env: WorkflowEnvironment, workflow_id: str) -> list[int]:
    """The event count of every run in the chain of `workflow_id`."""
    lengths, run_id = [], (await env.client.get_workflow_handle(workflow_id).describe()).run_id
    handle = env.client.get_workflow_handle(workflow_id)
    first = (await handle.describe()).raw_description.workflow_execution_info.first_run_id
    run_id = first or run_id
    while run_id:
        events = [
            e
            async for e in env.client.get_workflow_handle(
                workflow_id, run_id=run_id
            ).fetch_history_events()
        ]
        lengths.append(len(events))
        last = events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    return lengths


async def test_an_item_whose_ai_answer_fails_fails_alone(temporal_env, run_env):
    queue, world = run_env
    world.keywords = 40
    world.failing_items = {1002}  # the ideas call for the second cluster: a malformed answer
    ran = await finish(await start_run(temporal_env.client, queue))
    assert ran.result.status == "completed"
    got = stages(ran.result)
    assert (got["ideas"].done, got["ideas"].failed) == (got["ideas"].total - 1, 1)
    want = expected_counts(world)
    assert got["review"].done == want["review"] - world.ideas_per_cluster
    assert not any(k.endswith(":cluster:1002") for k in world.charges)  # never charged
    assert_each_item_charged_once(world)


async def test_a_childs_out_of_credits_report_that_meets_the_resume_does_not_pause_again(
    temporal_env,
):
    """A child batch's "out of credits" that reaches the run in the same workflow task as
    the user's resume (after a top-up) is answered by that resume: the run goes on. The
    worker is stopped while both signals are sent, so one activation carries them."""
    world, queue = World(), f"stale-{uuid.uuid4().hex}"
    world.keywords = 40
    world.max_concurrency = 1  # the children keep images to claim when the pause comes
    world.image_gate = asyncio.Event()
    client = temporal_env.client

    def worker() -> Worker:
        return Worker(
            client, task_queue=queue, workflows=list(WORKFLOWS), activities=world.activities()
        )

    async with worker():
        handle = await start_run(client, queue)
        await wait_until(handle, lambda p: bool(p.active_batches))
        await world_until(world, lambda w: w.waiting.get("generate_images", 0) > 0)
        await handle.signal("pause", ControlInput(reason="user"))
        await wait_until(handle, lambda p: p.status == "paused")
        world.image_gate.set()
        await world_until(world, lambda w: not w.waiting.get("generate_images") and not w.active)
        batch = (await handle.query("progress"))["active_batches"][0]
    await handle.signal(CHILD_PAUSED, ChildReport(batch_id=batch, status="paused",
                                                  pause_reason="insufficient_credits"))  # fmt: skip
    await handle.signal("resume", ControlInput())
    async with worker():
        settled = await wait_until(
            handle, lambda p: p.status == "completed" or p.pause_reason == "insufficient_credits"
        )
        assert settled.status == "completed", settled  # not paused again by the stale report
        result = await finish(handle)
    assert result.result.status == "completed", result.result
    assert world.note_types().count("automation_paused") == 0  # only the user paused it


@pytest.mark.parametrize(("resumes", "pauses"), [(0, False), (1, True)])
async def test_a_childs_report_older_than_a_resume_the_run_sent_it_does_not_pause_the_run(
    temporal_env, resumes: int, pauses: bool
):
    """A child's "out of credits" that was decided before the resume the run sent it (the
    child had taken 0 resumes; the run has sent 1) reaches the run after that resume: the
    run goes on. The same report from after the resume (1) pauses the run, as it must."""
    world, queue = World(), f"stale-{uuid.uuid4().hex}"
    world.keywords = 40
    world.max_concurrency = 1  # the children keep images to claim when the pause comes
    world.image_gate = asyncio.Event()
    client = temporal_env.client
    async with Worker(
        client, task_queue=queue, workflows=list(WORKFLOWS), activities=world.activities()
    ):
        handle = await start_run(client, queue)
        await wait_until(handle, lambda p: bool(p.active_batches))
        batch = (await handle.query("progress"))["active_batches"][0]
        child = client.get_workflow_handle(batch)
        await handle.signal("pause", ControlInput(reason="user"))
        await wait_until(child, lambda p: p.status == "paused")  # the run told its child
        await handle.signal("resume", ControlInput())
        await wait_until(child, lambda p: p.status == "running")  # ... and told it again
        report = ChildReport(batch_id=batch, status="paused",
                             pause_reason="insufficient_credits", resumes=resumes)  # fmt: skip
        await handle.signal(CHILD_PAUSED, report)
        world.image_gate.set()
        settled = await wait_until(
            handle, lambda p: p.status == "completed" or p.pause_reason == "insufficient_credits"
        )
        assert (settled.status == "paused") is pauses, settled
        if pauses:
            await handle.signal("resume", ControlInput())
        result = await finish(handle)
    assert result.result.status == "completed", result.result
