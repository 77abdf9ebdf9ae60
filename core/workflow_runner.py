"""The workflow sandbox, without its per-payload detour for converters that need none.

From temporalio 1.35 a worker passes every payload of every activation and completion
through a command-aware data converter three times each way (codec, external storage,
storage references). Each pass first asks the workflow instance which serialization or
storage context the payload belongs to, and the sandboxed instance answers by compiling
and `exec`-ing a snippet inside the sandbox with its import hooks applied. A py-spy
profile (`--gil`) of a worker that ran only workflows during a 300-keyword automation
run put 47 % of its CPU there: more than the workflows' own code. The answers only pick
which codec or store a payload goes through, and igny8's converter (pydantic, no codec,
no external storage) sends every payload through unchanged whatever the context, so
asking is wasted work. This runner keeps the sandbox (its import restrictions and
determinism checks) and answers those two questions directly, and only while the
converter has no codec and no external storage: give it one and it asks the sandbox as
the SDK does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio.converter import DataConverter
from temporalio.converter._extstore import StorageDriverStoreContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance


class _ContextFreeInstance(_Instance):
    """A sandboxed instance whose payloads need no context: none is computed."""

    def get_serialization_context(self, command_info: Any) -> None:
        return None  # the context-free converter: identical output for every payload

    def get_external_store_context(self, command_info: Any) -> StorageDriverStoreContext:
        return StorageDriverStoreContext(target=None)  # no store to choose a target in


def needs_context(converter: DataConverter) -> bool:
    """Whether a payload's context can change what `converter` makes of it."""
    return converter.payload_codec is not None or converter.external_storage is not None


@dataclass(frozen=True)
class IgnyWorkflowRunner(SandboxedWorkflowRunner):
    """The SDK's sandboxed runner; for a converter that needs no payload context, its
    instances skip the sandbox round trip that would compute one."""

    data_converter: DataConverter = field(
        default_factory=lambda: DataConverter.default, kw_only=True
    )

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        if needs_context(self.data_converter):
            return super().create_instance(det)
        return _ContextFreeInstance(det, self.runner_class, self.restrictions)
