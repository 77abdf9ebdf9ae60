"""`igny8 automation …` end to end: the CLI over real HTTP → the API (uvicorn in a thread,
with its own Temporal client) → the dev server → a worker → the simulator → the database.
The commands run in a thread through Typer's runner (the worker keeps this test's event
loop); Ctrl-C is a real SIGINT to a real `igny8` process.

Also, fast: the demo seed that keeps every demo run supplied with keywords and credits, and
the watcher's fall-back from the live stream to polling, against a scripted API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import sqlalchemy as sa
import uvicorn
from click.testing import Result
from typer.testing import CliRunner

from api.main import create_app
from cli import main as cli_main
from cli.progress import ApiError, run_snapshots
from domain.ledger import Ledger
from domain.reconcile import reconcile
from domain.seed import (
    DEMO_KEYWORDS,
    DEMO_RUN_CREDITS,
    DemoRunPrep,
    prepare_demo_run,
    seed_demo,
    seed_models,
)
from models.pipeline import Keyword
from models.runs import AutomationRun
from tests import builders
from tests.temporal_fixtures import WorkerCtx
from workflows.automation_run import AutomationRunWorkflow, RunProgress

TEMPORAL = pytest.mark.temporal
ROOT = Path(__file__).resolve().parent.parent
STAGES = ("clustering", "ideas", "tasks", "content", "image_prompts", "images", "review")
# Two topics the simulator clusters apart: a handful of articles, two images each.
KEYWORDS = [
    "cold brew coffee",
    "cold brew ratio",
    "cold brew concentrate",
    "french press coffee",
    "french press ratio",
    "how to use a french press",
]
STARTED = re.compile(r"automation run (\S+) started")
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


# ---- the API over HTTP ---------------------------------------------------------------------
class ApiThread:
    """The real app served by uvicorn in a daemon thread on a free port. Its lifespan
    connects its own Temporal client in that thread's loop, as `igny8 api` would."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self, timeout_s: float = 20.0) -> ApiThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        with contextlib.suppress(OSError):
            self._socket.close()


@pytest_asyncio.fixture
async def api_url(wctx: WorkerCtx) -> AsyncIterator[str]:
    target = wctx.client.service_client.config.target_host
    settings = wctx.settings.model_copy(update={"temporal_address": target})
    server = await asyncio.to_thread(ApiThread(create_app(settings)).start)
    yield server.url
    await asyncio.to_thread(server.stop)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tables on one line each (the runner is no terminal: rich would use 80 columns), and
    no demo key from a developer's .data/ standing in for a missing one."""
    monkeypatch.setattr(cli_main.console, "width", 200)
    monkeypatch.setattr(cli_main, "demo_key_file", lambda: tmp_path / "no-demo-key")


# ---- helpers -------------------------------------------------------------------------------
def seeded(engine: sa.Engine, credits: int = 5000) -> tuple[int, str, int]:
    """The install's price list, an account with credits, a site with six keywords."""
    seed_models(engine)
    account_id, key = builders.account(engine, credits=credits)
    site = builders.site(engine, account_id, max_in_article_images=1)
    builders.keywords(engine, account_id, site.id, KEYWORDS)
    return account_id, key, site.id


async def igny8(*args: object, url: str, key: str | None) -> Result:
    """`igny8 ARGS --api-url URL`, the key in IGNY8_API_KEY, in a thread."""
    env = {"IGNY8_API_KEY": key} if key else {"IGNY8_API_KEY": ""}
    argv = [str(a) for a in args] + ["--api-url", url]
    return await asyncio.to_thread(CliRunner().invoke, cli_main.app, argv, env=env)


def run_id_of(result: Result) -> str:
    found = STARTED.search(result.output)
    assert found, result.output
    return found.group(1)


async def finished(wctx: WorkerCtx, run_id: str) -> RunProgress:
    """The workflow's own end: its row and logs are written by then."""
    handle = wctx.client.get_workflow_handle_for(AutomationRunWorkflow.run, run_id)
    return await asyncio.wait_for(handle.result(), timeout=60)


async def progress_until(
    url: str, key: str, run_id: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    body: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=f"{url}/api/v1", headers=headers) as http:
        for _ in range(400):
            body = (await http.get(f"/automation/runs/{run_id}")).json()
            if done(body):
                return body
            await asyncio.sleep(0.05)
    raise AssertionError(f"the run never got there; last {body}")


def summary_rows(output: str) -> dict[str, list[str]]:
    """The per-stage summary table's rows by stage: [status, done/total, failed, credits]."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if cells and cells[0] in (*STAGES, "total") and len(cells) == 5:
            rows[cells[0]] = cells[1:]
    return rows


def run_row(engine: sa.Engine, run_id: str) -> Any:
    table = AutomationRun.__table__
    with engine.connect() as conn:
        return conn.execute(sa.select(table).where(table.c.run_id == run_id)).one()


# ---- the tests -----------------------------------------------------------------------------
@TEMPORAL
async def test_run_follows_the_run_to_the_end_prints_the_summary_and_list_shows_it(
    wctx: WorkerCtx, api_url: str
):
    account_id, key, site = seeded(wctx.engine)
    result = await igny8("automation", "run", "--site", site, url=api_url, key=key)
    assert result.exit_code == 0, result.output
    run_id = run_id_of(result)
    assert f"automation run {run_id}: completed" in result.output
    rows = summary_rows(result.output)
    assert set(rows) == {*STAGES, "total"}, result.output
    for stage in STAGES:
        status, count, failed, _ = rows[stage]
        done, total = count.split("/")
        assert (status, done, failed) == ("completed", total, "0"), (stage, result.output)
    assert int(rows["clustering"][1].split("/")[1]) >= 1
    assert int(rows["images"][1].split("/")[1]) >= 2  # articles illustrated
    final = await finished(wctx, run_id)
    assert final.status == "completed"
    spent = 5000 - builders.balance(wctx.engine, account_id)
    assert int(rows["total"][3]) == final.credits_used == spent > 0
    assert sum(int(rows[s][3]) for s in STAGES) == spent
    assert f"balance {5000 - spent} credits" in result.output

    listed = await igny8("automation", "list", "--site", site, url=api_url, key=key)
    assert listed.exit_code == 0, listed.output
    line = next(ln for ln in listed.output.splitlines() if run_id in ln)
    assert "completed" in line and str(spent) in line
    assert reconcile(wctx.engine) == []


@TEMPORAL
async def test_pause_resume_and_cancel_reach_the_workflow(wctx: WorkerCtx, api_url: str):
    wctx.sim.configure(latency_s=0.4)  # each stage takes a while: room to steer
    _, key, site = seeded(wctx.engine)
    started = await igny8("automation", "run", "--site", site, "--no-watch", url=api_url, key=key)
    assert started.exit_code == 0, started.output
    run_id = run_id_of(started)
    assert f"igny8 automation watch {run_id}" in started.output

    paused = await igny8("automation", "pause", run_id, url=api_url, key=key)
    assert paused.exit_code == 0 and "pause requested" in paused.output, paused.output
    snap = await progress_until(api_url, key, run_id, lambda p: p["status"] == "paused")
    assert snap["pause_reason"] == "user"
    assert run_row(wctx.engine, run_id).status in {"running", "paused"}

    resumed = await igny8("automation", "resume", run_id, url=api_url, key=key)
    assert resumed.exit_code == 0 and "resume requested" in resumed.output, resumed.output
    await progress_until(api_url, key, run_id, lambda p: p["status"] == "running")

    cancelled = await igny8("automation", "cancel", run_id, url=api_url, key=key)
    assert cancelled.exit_code == 0 and "cancel requested" in cancelled.output
    watched = await igny8("automation", "watch", run_id, url=api_url, key=key)
    assert watched.exit_code == 1, watched.output
    assert f"automation run {run_id}: cancelled" in watched.output
    assert (await finished(wctx, run_id)).status == "cancelled"

    late = await igny8("automation", "pause", run_id, url=api_url, key=key)
    assert late.exit_code == 1 and "already finished" in late.output, late.output
    listed = await igny8("automation", "list", url=api_url, key=key)
    assert run_id in listed.output and "cancelled" in listed.output
    assert reconcile(wctx.engine) == []


@TEMPORAL
@SQLITE_ONLY
async def test_bad_input_exits_non_zero_with_a_clear_message(wctx: WorkerCtx, api_url: str):
    _, key, site = seeded(wctx.engine)
    _, stranger_key = builders.account(wctx.engine, credits=10)

    unknown = await igny8("automation", "run", "--site", 999999, url=api_url, key=key)
    assert unknown.exit_code == 2 and "Site 999999 not found" in unknown.output, unknown.output
    theirs = await igny8("automation", "run", "--site", site, url=api_url, key=stranger_key)
    assert theirs.exit_code == 2 and f"Site {site} not found" in theirs.output
    for command in ("watch", "pause", "resume", "cancel"):
        missing = await igny8("automation", command, "automation-1-1-nope", url=api_url, key=key)
        assert missing.exit_code == 2, (command, missing.output)
        assert "automation-1-1-nope not found" in missing.output, (command, missing.output)
    refused = await igny8("automation", "list", url=api_url, key="igny8_not-a-key")
    assert refused.exit_code == 2 and "Invalid or inactive API key" in refused.output
    keyless = await igny8("automation", "list", url=api_url, key=None)
    assert keyless.exit_code == 2 and "no API key" in keyless.output
    zero = await igny8("automation", "run", "--site", site, "--budget", 0, url=api_url, key=key)
    assert zero.exit_code == 2 and "--budget" in zero.output
    down = await igny8("automation", "list", url="http://127.0.0.1:9", key=key)
    assert down.exit_code == 1 and "cannot reach the API" in down.output

    first = await igny8("automation", "run", "--site", site, "--no-watch", url=api_url, key=key)
    run_id = run_id_of(first)
    second = await igny8("automation", "run", "--site", site, url=api_url, key=key)
    assert second.exit_code == 1, second.output
    assert "already has an active automation run" in second.output
    assert f"igny8 automation watch {run_id}" in second.output
    await igny8("automation", "cancel", run_id, url=api_url, key=key)
    assert (await finished(wctx, run_id)).status in {"cancelled", "completed"}


@contextlib.contextmanager
def killed_on_exit(proc: asyncio.subprocess.Process) -> Iterator[None]:
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.kill()


@TEMPORAL
@SQLITE_ONLY
async def test_ctrl_c_stops_watching_and_says_how_to_come_back(wctx: WorkerCtx, api_url: str):
    wctx.sim.configure(latency_s=0.3)
    _, key, site = seeded(wctx.engine)
    env = {**os.environ, "IGNY8_API_KEY": key, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "automation", "run", "--site", str(site),
        "--api-url", api_url, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    with killed_on_exit(proc):
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        found = STARTED.search(first)
        assert found, first
        run_id = found.group(1)
        await asyncio.sleep(1.0)  # watching now
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    output = first + rest.decode()
    assert proc.returncode == 130, output
    for hint in ("watch", "pause", "cancel"):
        assert f"igny8 automation {hint} {run_id}" in output, output
    # only the watching stopped: the run goes on to the end
    assert (await finished(wctx, run_id)).status == "completed"


def test_the_demo_seed_gives_every_demo_run_keywords_and_credits(engine: sa.Engine):
    first = seed_demo(engine)
    again = seed_demo(engine, want_key=False)
    assert (again.account_id, again.site_id, again.api_key) == (
        first.account_id,
        first.site_id,
        None,
    )
    table = Keyword.__table__
    with engine.connect() as conn:
        stored = conn.execute(sa.select(table.c.keyword)).scalars().all()
    assert sorted(stored) == sorted(k for k, *_ in DEMO_KEYWORDS) and len(stored) >= 30
    assert prepare_demo_run(engine, first.site_id) == DemoRunPrep(len(DEMO_KEYWORDS), None, 0)

    # a finished run leaves every keyword clustered: the next demo imports a fresh round
    cluster, _ = builders.cluster(engine, first.account_id, first.site_id, "Coffee", ["x y"])
    with engine.begin() as conn:
        conn.execute(sa.update(table).values(cluster_id=cluster.id))
    prep = prepare_demo_run(engine, first.site_id)
    assert (prep.keywords_waiting, prep.round_no) == (len(DEMO_KEYWORDS), 2)
    with engine.connect() as conn:
        fresh = conn.execute(sa.select(table.c.keyword).where(table.c.cluster_id.is_(None)))
        assert "cold brew ratio (round 2)" in set(fresh.scalars())

    # credits held elsewhere: topped up to what a run needs, once per run number
    ledger = Ledger(engine)
    ledger.reserve(first.account_id, 1700, "test-hold-1")
    assert prepare_demo_run(engine, first.site_id).topped_up == 700
    assert ledger.balance(first.account_id).available == DEMO_RUN_CREDITS
    ledger.reserve(first.account_id, 500, "test-hold-2")
    assert prepare_demo_run(engine, first.site_id).topped_up == 0  # same run number: replay
    assert reconcile(engine) == []


# ---- the live stream's fallback, against a scripted API ------------------------------------
def snapshot(status: str, done: int = 0) -> dict[str, Any]:
    stage = {"name": "clustering", "status": status, "total": 2, "done": done, "failed": 0,
             "credits_used": done}  # fmt: skip
    return {"run_id": "automation-1-1-x", "site_id": 1, "status": status, "pause_reason": None,
            "current_stage": None, "stages": [stage], "credits_used": done, "cost_usd": "0",
            "balance": 10, "budget_credits": None}  # fmt: skip


def scripted_api(events: Callable[[], httpx.Response], polls: list[dict[str, Any]]) -> httpx.Client:
    """An API whose event stream answers `events()` and whose GETs answer `polls` in turn."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return events()
        return httpx.Response(200, json=polls.pop(0))

    return httpx.Client(base_url="http://api", transport=httpx.MockTransport(answer))


def sse(*snaps: dict[str, Any]) -> httpx.Response:
    body = ": keep-alive\n\n" + "".join(
        f"event: progress\ndata: {json.dumps(s)}\n\n" for s in snaps
    )
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def statuses(client: httpx.Client) -> list[tuple[str, int]]:
    return [(s["status"], s["credits_used"]) for s in run_snapshots(client, "r", poll_s=0)]


def test_a_stream_that_ends_with_the_run_needs_no_polling():
    client = scripted_api(lambda: sse(snapshot("running"), snapshot("completed", 2)), [])
    assert statuses(client) == [("running", 0), ("completed", 2)]


def test_a_stream_that_drops_mid_run_is_followed_by_polling():
    polls = [snapshot("running", 1), snapshot("completed", 2)]
    client = scripted_api(lambda: sse(snapshot("running")), polls)
    assert statuses(client) == [("running", 0), ("running", 1), ("completed", 2)]


def test_a_stream_that_cannot_connect_is_replaced_by_polling():
    def refused() -> httpx.Response:
        raise httpx.ConnectError("refused")

    client = scripted_api(refused, [snapshot("running", 1), snapshot("failed", 1)])
    assert statuses(client) == [("running", 1), ("failed", 1)]


def test_an_unknown_run_on_the_stream_is_a_usage_error_not_a_poll():
    gone = httpx.Response(404, json={"detail": "Automation run r not found"})
    with pytest.raises(ApiError) as caught:
        statuses(scripted_api(lambda: gone, []))
    assert caught.value.exit_code == 2 and "Automation run r not found" in str(caught.value)
