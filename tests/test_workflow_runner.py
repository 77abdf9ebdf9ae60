"""The worker's sandbox runner (core/workflow_runner.py): the same workflows, the same
results, without a sandbox round trip per payload to compute a context that igny8's
converter would ignore."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest
from temporalio.converter import PayloadCodec
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

from core.temporal import DATA_CONVERTER
from core.workflow_runner import IgnyWorkflowRunner, needs_context
from tests.fakes import World
from tests.workflow_paths import PATHS, WORKFLOW_STARTS
from worker import WORKFLOWS

CONTEXT_SNIPPETS = ("get_serialization_context", "get_external_store_context")


@pytest.fixture
def sandbox_code(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every snippet the sandboxed instances run, in order."""
    ran: list[str] = []
    original = _Instance._run_code

    def recording(self: _Instance, code: str, **extra: object) -> None:
        ran.append(code)
        original(self, code, **extra)

    monkeypatch.setattr(_Instance, "_run_code", recording)
    yield ran


async def happy_batch(env, runner: WorkflowRunner) -> tuple[object, World]:
    world = World()
    queue = f"runner-{uuid.uuid4().hex}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=world.activities(),
        workflow_runner=runner,
    ):
        ran = await PATHS["happy"](WORKFLOW_STARTS["ImageBatchWorkflow"])(env.client, queue, world)
    return ran.result, world


async def test_the_runner_makes_the_same_batch_without_asking_the_sandbox_for_contexts(
    time_skipping_env, sandbox_code
):
    ours, our_world = await happy_batch(
        time_skipping_env, IgnyWorkflowRunner(data_converter=DATA_CONVERTER)
    )
    ours_ran = list(sandbox_code)
    sandbox_code.clear()
    sdks, sdk_world = await happy_batch(time_skipping_env, SandboxedWorkflowRunner())

    assert ours.status == sdks.status == "completed"
    assert (ours.images_done, ours.credits_used) == (sdks.images_done, sdks.credits_used)
    items = lambda world: sorted(key.split(":", 1)[1] for key in world.charges)  # noqa: E731
    assert items(our_world) == items(sdk_world)  # the same images, each charged once
    # the SDK's runner asks the sandbox for a context per payload; ours never does, and
    # still runs every activation in the sandbox
    assert any(s in code for code in sandbox_code for s in CONTEXT_SNIPPETS)
    assert not any(s in code for code in ours_ran for s in CONTEXT_SNIPPETS)
    assert sum("activate(" in code for code in ours_ran) >= 10


class _PassThroughCodec(PayloadCodec):
    async def encode(self, payloads):
        return list(payloads)

    async def decode(self, payloads):
        return list(payloads)


async def test_a_converter_with_a_codec_keeps_the_sdks_context_per_payload(
    time_skipping_env, sandbox_code
):
    with_codec = dataclasses.replace(DATA_CONVERTER, payload_codec=_PassThroughCodec())
    assert (needs_context(DATA_CONVERTER), needs_context(with_codec)) == (False, True)
    # a codec may encode each payload by its context: the runner must let the SDK ask
    result, _ = await happy_batch(time_skipping_env, IgnyWorkflowRunner(data_converter=with_codec))
    assert result.status == "completed"
    assert any(s in code for code in sandbox_code for s in CONTEXT_SNIPPETS)
