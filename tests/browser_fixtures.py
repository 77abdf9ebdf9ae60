"""A real browser against a real stack, for the dashboard's tests and screenshots.

One stack per test module: a SQLite database, an in-process worker on its own task
queue (the session's Temporal dev server and simulator), and the API served by uvicorn
on a free port in the test's event loop; one headless Chromium (Debian's `chromium`,
driven by Playwright for Python, no browser download). When Chromium or Playwright is
missing, or Chromium cannot start, the tests skip and say why.

Every page a test opens records its console errors and warnings, uncaught exceptions,
failed requests and HTTP errors; `Guard.assert_clean()` fails the test on any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from temporalio.client import Client

from api.deps import get_engine, get_settings_dep, get_temporal
from api.main import create_app
from core.settings import Settings
from simulator.server import SimulatorThread
from tests import dbs
from tests.procs import free_ports
from tests.temporal_fixtures import running_worker, test_settings, wait_until_idle

CHROMIUM = os.environ.get("IGNY8_CHROMIUM", "/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


def chromium_path() -> str | None:
    """The Chromium binary, or None (the reason is printed by the fixture)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    return shutil.which("chromium")


@dataclass
class Stack:
    url: str
    engine: sa.Engine
    settings: Settings
    client: Client
    sim: SimulatorThread
    app: Any


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """`app` on uvicorn at a free port in this event loop, until the block ends."""
    port = free_ports(("api",))["api"]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # pytest owns them
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started or task.done():
            break
        await asyncio.sleep(0.025)
    if not server.started:
        task.cancel()
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


@asynccontextmanager
async def running_stack(
    client: Client, simulator: SimulatorThread, tmp: Path
) -> AsyncIterator[Stack]:
    url = dbs.create_sqlite_database(tmp)
    engine = dbs.engine_for(url, pool_size=30)
    wait_until_idle(simulator)
    simulator.reset()
    settings = test_settings(url, simulator.url, tmp / "media", f"dash-{uuid.uuid4().hex}")
    try:
        async with running_worker(client, settings, engine):
            app = create_app(settings, connect_temporal=False)
            app.dependency_overrides[get_engine] = lambda: engine
            app.dependency_overrides[get_settings_dep] = lambda: settings
            app.dependency_overrides[get_temporal] = lambda: client
            async with serving(app) as base:
                yield Stack(base, engine, settings, client, simulator, app)
            await terminate_leftovers(client, settings.task_queue)
    finally:
        simulator.reset()
        engine.dispose()


async def terminate_leftovers(client: Client, task_queue: str) -> None:
    """Workflows the stack left running on its task queue (a site's publisher, sleeping
    until a slot years ahead) would wait forever on a queue nobody polls: end them."""
    query = f'TaskQueue = "{task_queue}" AND ExecutionStatus = "Running"'
    with contextlib.suppress(Exception):  # best effort: the dev server may be going away
        async for found in client.list_workflows(query):
            await client.get_workflow_handle(found.id).terminate(reason="test stack stopped")


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A headless Chromium, or a pytest skip saying why there is none."""
    path = chromium_path()
    if path is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium): browser tests skipped")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]'): browser tests skipped")
    async with async_playwright() as pw:
        try:
            browser = await pw.chromium.launch(executable_path=path)
        except Exception as exc:  # a Chromium that cannot run here
            pytest.skip(f"Chromium at {path} cannot start: {str(exc).splitlines()[0]}")
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Guard:
    """What went wrong on a page: console errors and warnings, uncaught errors, failed
    requests, and HTTP errors (except the statuses a test says it expects)."""

    problems: list[str] = field(default_factory=list)
    expected: set[tuple[int, str]] = field(default_factory=set)

    def expect(self, status: int, path: str) -> None:
        self.expected.add((status, path))

    def watch(self, page: Any) -> None:
        def on_console(msg: Any) -> None:
            if msg.type in ("error", "warning"):
                # Chromium logs a document's own error status (the 404 page) like this;
                # whether that status was expected is judged in on_response.
                if msg.text.startswith("Failed to load resource: the server responded"):
                    return
                self.problems.append(f"console {msg.type}: {msg.text} ({msg.location})")

        def on_response(resp: Any) -> None:
            if resp.status >= 400:
                path = resp.url.split("://", 1)[1].split("/", 1)[1]
                if (resp.status, "/" + path.split("?")[0]) not in self.expected:
                    self.problems.append(f"HTTP {resp.status}: {resp.request.method} {resp.url}")

        page.on("console", on_console)
        page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))

        def on_failed(req: Any) -> None:
            # The tab icon is fetched late and dropped when the test navigates on at once.
            if req.url.endswith("/favicon.svg") and "ERR_ABORTED" in str(req.failure):
                return
            self.problems.append(f"request failed: {req.url} {req.failure}")

        page.on("requestfailed", on_failed)
        page.on("response", on_response)

    def assert_clean(self) -> None:
        assert not self.problems, "\n".join(self.problems)
