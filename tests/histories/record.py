"""Record the history of every path of every workflow into tests/histories/<release>/.

    .venv/bin/python -m tests.histories.record            # all workflows, all paths
    .venv/bin/python -m tests.histories.record --release r3 --only ImageBatchWorkflow

Each path (tests/workflow_paths.py) runs against the fake activities on the time-skipping
server; the first run's history (and the last one's, after a continue-as-new) is saved as
JSON. tests/test_replay.py replays every file ever recorded: record a new release's
histories in a new folder and keep the old ones, so workflows that are still running when
a release is deployed keep replaying. When to re-record: after a change that adds a path
or a workflow; never to make an old history pass (put the change behind
`workflow.patched` instead).
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.publishing import PublisherInput, poke_publisher, publisher_id
from core.temporal import DATA_CONVERTER, SEARCH_ATTRIBUTES, temporal_binary, test_server_binary
from tests.automation_paths import RUN_PATHS
from tests.fakes import World
from tests.workflow_paths import PATHS, WORKFLOW_STARTS
from worker import WORKFLOWS
from workflows.hold_sweeper import HoldSweeperWorkflow, SweeperInput
from workflows.publisher import PublisherWorkflow

HERE = Path(__file__).resolve().parent
RELEASE = "r7"


async def record_paths(client: Client, out: Path, only: str | None) -> list[Path]:
    written = []
    for kind, start in WORKFLOW_STARTS.items():
        if only and kind != only:
            continue
        for name, path in PATHS.items():
            world, queue = World(), f"record-{uuid.uuid4().hex}"
            async with Worker(
                client, task_queue=queue, workflows=list(WORKFLOWS), activities=world.activities()
            ):
                ran = await path(start)(client, queue, world)
            for n, run_id in enumerate(ran.run_ids, start=1):
                handle = client.get_workflow_handle(ran.handle.id, run_id=run_id)
                suffix = f"-run{n}" if len(ran.run_ids) > 1 else ""
                written.append(await _save(handle, out / kind / f"{name}{suffix}.json"))
    return written


async def record_runs(client: Client, out: Path) -> list[Path]:
    """The automation run's paths, on the dev server (real time: its paths hold calls back
    on purpose, longer than the time-skipping server would let a heartbeat go missing)."""
    written = []
    for name, path in RUN_PATHS.items():
        world, queue = World(), f"record-{uuid.uuid4().hex}"
        async with Worker(
            client, task_queue=queue, workflows=list(WORKFLOWS), activities=world.activities()
        ):
            ran = await path(client, queue, world)
        for n, run_id in enumerate(ran.run_ids, start=1):
            handle = client.get_workflow_handle(ran.handle.id, run_id=run_id)
            suffix = f"-run{n}" if len(ran.run_ids) > 1 else ""
            target = out / "AutomationRunWorkflow" / f"{name}{suffix}.json"
            written.append(await _save(handle, target))
    return written


async def record_publisher(env: WorkflowEnvironment, out: Path) -> Path:
    """Two due articles (one published, one failing for good), then idle days."""
    world, queue = World(publish_due=[1, 2], publish_failing={2}), f"record-{uuid.uuid4().hex}"
    async with Worker(
        env.client, task_queue=queue, workflows=list(WORKFLOWS), activities=world.activities()
    ):
        await poke_publisher(env.client, queue, 1, 7)
        handle = env.client.get_workflow_handle(publisher_id(1, 7))
        while not (world.published and world.publish_failed):
            await asyncio.sleep(0.05)
        await env.sleep(timedelta(days=2))
        await handle.terminate()
    return await _save(handle, out / "PublisherWorkflow" / "publish_and_idle.json")


async def record_publisher_backlog(env: WorkflowEnvironment, out: Path) -> list[Path]:
    """A backlog past the history limit: the publisher continues as new (release r3; from
    r4 it publishes in lanes of articles, so it takes more of them to fill the history)."""
    world, queue = World(publish_due=list(range(1, 25))), f"record-{uuid.uuid4().hex}"
    async with Worker(
        env.client, task_queue=queue, workflows=list(WORKFLOWS), activities=world.activities()
    ):
        handle = await env.client.start_workflow(
            PublisherWorkflow.run,
            PublisherInput(account_id=1, site_id=8, history_limit=40, lane_articles=2),
            id=publisher_id(1, 8),
            task_queue=queue,
        )
        while len(world.published) < 24:
            await asyncio.sleep(0.05)
        first = handle.first_execution_run_id
        await handle.terminate()
    history = await env.client.get_workflow_handle(handle.id, run_id=first).fetch_history()
    second = history.events[-1].workflow_execution_continued_as_new_event_attributes
    folder = out / "PublisherWorkflow"
    return [
        await _save(
            env.client.get_workflow_handle(handle.id, run_id=first), folder / "backlog-run1.json"
        ),
        await _save(
            env.client.get_workflow_handle(handle.id, run_id=second.new_execution_run_id),
            folder / "backlog-run2.json",
        ),
    ]


async def record_sweeper(env: WorkflowEnvironment, out: Path) -> Path:
    """Two sweeps and a continue-as-new."""
    world, queue = World(), f"record-{uuid.uuid4().hex}"
    async with Worker(
        env.client, task_queue=queue, workflows=list(WORKFLOWS), activities=world.activities()
    ):
        handle = await env.client.start_workflow(
            HoldSweeperWorkflow.run,
            SweeperInput(interval_seconds=60, sweeps_before_continue=2),
            id=f"sweeper-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        await env.sleep(timedelta(minutes=3))
        first = handle.first_execution_run_id
        await handle.terminate()
    return await _save(
        env.client.get_workflow_handle(handle.id, run_id=first),
        out / "HoldSweeperWorkflow" / "sweeps_and_continue.json",
    )


async def _save(handle, target: Path) -> Path:
    history = await handle.fetch_history()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(history.to_json())
    return target


async def main(release: str, only: str | None) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER, test_server_existing_path=test_server_binary()
    )
    out = HERE / release
    try:
        written = await record_paths(env.client, out, only)
        if only in (None, "HoldSweeperWorkflow"):
            written.append(await record_sweeper(env, out))
        if only in (None, "PublisherWorkflow"):
            written.append(await record_publisher(env, out))
            written += await record_publisher_backlog(env, out)
    finally:
        await env.shutdown()
    if only in (None, "AutomationRunWorkflow"):
        dev = await WorkflowEnvironment.start_local(
            data_converter=DATA_CONVERTER,
            dev_server_existing_path=temporal_binary(),
            search_attributes=SEARCH_ATTRIBUTES,
        )
        try:
            written += await record_runs(dev.client, out)
        finally:
            await dev.shutdown()
    for path in written:
        print(path.relative_to(HERE.parent.parent))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", default=RELEASE, help="folder under tests/histories/")
    parser.add_argument("--only", help="one workflow type, e.g. ImageBatchWorkflow")
    args = parser.parse_args()
    asyncio.run(main(args.release, args.only))
