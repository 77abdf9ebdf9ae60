"""Replay safety (DESIGN §4): every history ever recorded under tests/histories/ replays
against today's workflow code, so a deploy never meets a non-determinism error in a run
that is still going. Fast: no server, no database.

A change to the order or kind of commands goes behind `workflow.patched`; the histories of
the new paths are recorded with `python -m tests.histories.record --release <next>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from core.temporal import DATA_CONVERTER
from core.workflow_runner import IgnyWorkflowRunner
from tests.fakes import Hold, World
from tests.workflow_paths import PATHS, WORKFLOW_STARTS
from worker import WORKFLOWS
from workflows.engine import metering
from workflows.engine.control import RunControl
from workflows.image_batch import ImageBatchInput, ImageBatchWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
RECORDED = sorted(HISTORIES.glob("r*/*/*.json"))
RELEASE1_STATE = HISTORIES / "state" / "ImageBatchWorkflow-release1-continued.json"


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"replay-{path.parent.name}-{path.stem}", path.read_text())


def replayer(**kw) -> Replayer:
    """A replayer that runs workflows as the worker does (its sandbox runner)."""
    kw.setdefault("workflow_runner", IgnyWorkflowRunner(data_converter=DATA_CONVERTER))
    return Replayer(workflows=list(WORKFLOWS), data_converter=DATA_CONVERTER, **kw)


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: str(p.relative_to(HISTORIES)))
async def test_every_recorded_history_replays(path: Path):
    await replayer().replay_workflow(load(path))


def test_every_workflow_and_path_has_a_recorded_history():
    recorded = {(p.parent.name, p.stem.split("-run")[0]) for p in RECORDED}
    for kind in WORKFLOW_STARTS:
        for name in PATHS:
            assert (kind, name) in recorded, (
                f"record {kind}/{name}: python -m tests.histories.record"
            )
    names = {wf.__temporal_workflow_definition.name for wf in WORKFLOWS}  # type: ignore[attr-defined]
    assert names <= {kind for kind, _ in recorded}, "a workflow has no recorded history"


@pytest.fixture
def extra_command(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A deliberate change of commands: read the balance before opening the task log."""
    original = metering.Meter.open

    async def open_after_a_balance_read(self, payload, model_name=None):  # type: ignore[no-untyped-def]
        await self._balance()
        return await original(self, payload, model_name)

    monkeypatch.setattr(metering.Meter, "open", open_after_a_balance_read)
    yield


@pytest.mark.parametrize("name", ["ImageBatchWorkflow/happy", "TextBatchWorkflow/happy"])
async def test_a_reordered_command_fails_the_replay(extra_command: None, name: str):
    """The check that the replay test can fail at all: the same histories, against code
    that issues one command more at the start, are refused as non-deterministic."""
    history = load(next(p for p in RECORDED if str(p).endswith(f"{name}.json")))
    unsandboxed = replayer(workflow_runner=UnsandboxedWorkflowRunner())  # sees the patch
    with pytest.raises(workflow.NondeterminismError):
        await unsandboxed.replay_workflow(history)


async def test_the_lane_history_replays_only_with_its_lanes(monkeypatch: pytest.MonkeyPatch):
    """The fast-wide-model history really holds lanes: the same code with lanes off for
    every model (no `generate_images`) is refused as non-deterministic."""
    from workflows import image_batch

    history = load(next(p for p in RECORDED if str(p).endswith("fast_wide_model.json")))
    assert "generate_images" in history.to_json()
    unsandboxed = replayer(workflow_runner=UnsandboxedWorkflowRunner())
    await unsandboxed.replay_workflow(history)
    monkeypatch.setattr(image_batch, "LANE_MIN_CONCURRENCY", 10**6)
    with pytest.raises(workflow.NondeterminismError):
        await unsandboxed.replay_workflow(history)


@pytest.mark.parametrize(
    "kind", ["ImageBatchWorkflow", "TextBatchWorkflow", "AutomationRunWorkflow"]
)
async def test_the_refused_before_resume_history_replays_only_with_its_rule(
    monkeypatch: pytest.MonkeyPatch, kind: str
):
    """The r6 history of a credit refusal that met a resume holds the rule's patch: the
    same code that pauses again on such a refusal is refused as non-deterministic."""
    history = load(HISTORIES / "r6" / kind / "refused_before_resume.json")
    unsandboxed = replayer(workflow_runner=UnsandboxedWorkflowRunner())
    await unsandboxed.replay_workflow(history)
    monkeypatch.setattr(RunControl, "refused_before_resume", lambda self, epoch: False)
    with pytest.raises(workflow.NondeterminismError):
        await unsandboxed.replay_workflow(history)


async def test_a_batch_continued_by_the_first_release_resumes(
    time_skipping_env: WorkflowEnvironment,
):
    """The previous release's continue-as-new input (its flat state, serialised by that
    release's own models) loads, and the batch finishes from where it was."""
    raw = json.loads(RELEASE1_STATE.read_text())
    assert "task_log_id" in raw["state"] and "meter" not in raw["state"]
    inp = ImageBatchInput.model_validate(raw)
    assert inp.state is not None and inp.state.loop.done == 5 and len(inp.state.pending) == 6
    assert [c.item_id for c in inp.state.loop.uncharged] == [301]
    world = World(balance=990)
    world.holds[1] = Hold(24, consumed=10)
    world.logs[1] = {"key": f"{inp.batch_id}:task-log", "function": "generate_images"}
    queue = "release1-continued"
    async with Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=world.activities(),
    ):
        result = await time_skipping_env.client.execute_workflow(
            ImageBatchWorkflow.run, inp, id=inp.batch_id, task_queue=queue
        )
    assert (result.status, result.images_total, result.images_done) == ("completed", 12, 12)
    assert sorted(int(k.rsplit(":", 1)[1]) for k in world.charges) == [
        301,
        400,
        401,
        500,
        501,
        600,
        601,
    ]  # the uncharged image and the six pending: nothing twice, nothing before
    assert result.credits_used == 24 and world.balance == 990 - 14
