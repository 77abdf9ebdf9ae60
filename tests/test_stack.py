"""`igny8 up` (what `make run` runs): everything starts, /health reports the database and
Temporal ok, the demo automation run goes through the real processes, and Ctrl-C, SIGTERM, SIGHUP and even
SIGKILL leave no child running and no port taken; a killed worker is replaced."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from domain.reconcile import reconcile
from models.db import make_engine
from tests.procs import (
    CAN_LIST_LISTENERS,
    CAN_LIST_PROCESSES,
    Listener,
    Proc,
    alive,
    command_line,
    descendants,
    free_ports,
    kill_all,
    listeners,
    wait_for,
    wait_gone,
    wait_listenable,
)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
PORT_NAMES = (
    "API_PORT",
    "TEMPORAL_PORT",
    "TEMPORAL_UI_PORT",
    "SIMULATOR_PORT",
    "DEMO_WORDPRESS_PORT",
)
# A free port is only known free when picked; something else may take it before `up`
# binds it. Then `up` exits at start, and the test tries again on fresh ports.
ATTEMPTS = 3
ADDRESS_IN_USE = ("already in use", "address in use")
# `up` gives its children 10 s to stop, then kills them: it must be gone well within this.
STOP_BOUND_S = 30.0
# The stop and restart tests pin what they count and ask Temporal about.
TASK_QUEUE = "igny8-stack-test"
PINNED_ENV = {"WORKER_PROCESSES": "2", "TASK_QUEUE": TASK_QUEUE, "TEMPORAL_NAMESPACE": "default"}
RUNNING = "running; press Ctrl-C to stop"  # printed once `up` has started everything
FULL_STACK = Counter({"temporal": 1, "simulator": 1, "worker": 2, "api": 1})


class ExitedEarly(Exception):
    """`igny8 up` exited before the stack was healthy."""


# ---- the processes `up` starts --------------------------------------------------------------
# Each child of `up` runs in its own session (cli/stack.py: start_new_session=True), so a
# signal to `up`'s process group never reaches them. The test notes them while they run, to
# prove afterwards that none survived, and to kill any that did so nothing leaks.
def role(pid: int) -> str:
    """Which part of the stack `pid` is, from its command line."""
    argv = command_line(pid)
    if "start-dev" in argv:
        return "temporal"
    if "simulator" in argv:
        return "simulator"
    if argv[-1:] == ["worker.py"]:
        return "worker"
    if "uvicorn" in argv:
        return "api"
    return " ".join(argv) or "gone"


# ---- one run of `igny8 up` -----------------------------------------------------------------
def wait_health(url: str, proc: subprocess.Popen, seen: set[Proc], timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        seen |= descendants(proc.pid)
        if proc.poll() is not None:
            raise ExitedEarly(f"igny8 up exited early with {proc.returncode}")
        try:
            last = httpx.get(url, timeout=2).json()
            if last.get("temporal") == "ok" and last.get("database") == "ok":
                seen |= descendants(proc.pid)
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"never healthy; last answer {last}")


def start_up(
    data_dir: Path, ports: dict[str, int], *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "OPENAI_API_KEY"}},
        **{k: str(v) for k, v in ports.items()},
        "DATA_DIR": str(data_dir),
        "TEMPORAL_ADDRESS": "",
        "SIMULATOR_LATENCY": "0.05",
        **(extra_env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class Output:
    """`up`'s output, read as it comes, so a test can wait for a line (health alone does
    not say `up` has finished starting) and still have all of it at the end."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self._lines.append(line.decode(errors="replace"))

    @property
    def text(self) -> str:
        return "".join(self._lines)

    def finish(self, timeout_s: float = 10) -> str:
        """All of it, once `up` has exited (its children may hold the pipe a moment longer)."""
        self._reader.join(timeout_s)
        return self.text


def early_exit_output(output: Output, data_dir: Path) -> str:
    logs = [
        f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
        for log in sorted((data_dir / "logs").glob("*.log"))
    ]
    return "\n".join([output.finish(), *logs])


@dataclass
class UpRun:
    """A healthy `igny8 up` and every process it was seen with."""

    proc: subprocess.Popen
    output: Output
    ports: dict[str, int]
    data_dir: Path
    health: dict
    seen: set[Proc] = field(default_factory=set)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['API_PORT']}/api/v1"

    def note_children(self) -> set[Proc]:
        """The processes below `up` now; remembered for the no-survivors check."""
        now = descendants(self.proc.pid)
        self.seen |= now
        return now

    def roles(self) -> Counter[str]:
        return Counter(role(pid) for pid, _ in self.note_children())

    def workers(self) -> set[int]:
        return {pid for pid, _ in self.note_children() if role(pid) == "worker"}

    def wait_running(self, timeout_s: float = 60) -> None:
        """Until `up` says it runs: past start-up, in the loop that supervises its children."""
        wait_for(lambda: RUNNING in self.output.text, timeout_s, f"`up` prints {RUNNING!r}")

    def stop(self, sig: int, timeout_s: float = 60) -> tuple[str, float | None]:
        """Send `sig` as it arrives in real life, and return `up`'s whole output and how long
        it took to exit (None: not within `timeout_s`, so the test killed it). SIGINT goes to
        the process group, as a terminal's Ctrl-C does; any other signal to `up` alone, as
        `kill` sends it: the children, in sessions of their own, never see it."""
        self.note_children()
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGINT:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return self.output.finish(), None
        return self.output.finish(), time.monotonic() - started

    def ctrl_c(self, timeout_s: float = 60) -> str:
        """Ctrl-C (SIGINT to the terminal's process group) and `up`'s whole output."""
        text, took = self.stop(signal.SIGINT, timeout_s)
        return text if took is not None else f"{text}\n[test] up ignored Ctrl-C for {timeout_s} s"


@contextlib.contextmanager
def running_up(
    tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None
) -> Iterator[UpRun]:
    """`igny8 up *args` on free ports, once healthy; on fresh ports again if one was taken
    meanwhile. On the way out, whatever the test did, `up` gets Ctrl-C and every process it
    was seen with is killed, so nothing leaks into other tests."""
    for attempt in range(1, ATTEMPTS + 1):
        ports = free_ports(PORT_NAMES)
        data_dir = tmp_path / f"data-{attempt}"
        seen: set[Proc] = set()
        proc = start_up(data_dir, ports, *args, extra_env=extra_env)
        output = Output(proc)
        run = UpRun(proc, output, ports, data_dir, {}, seen)
        try:
            run.health = wait_health(f"{run.api}/health", proc, seen)
        except ExitedEarly as exc:
            kill_all(alive(seen))
            text = early_exit_output(output, data_dir)
            if attempt < ATTEMPTS and any(m in text.lower() for m in ADDRESS_IN_USE):
                continue  # a port was taken after we picked it: fresh ports
            raise AssertionError(f"{exc}\n{text[-4000:]}") from None
        except BaseException:
            _tear_down(run)
            raise
        try:
            yield run
        finally:
            _tear_down(run)
        return


def _tear_down(run: UpRun) -> None:
    try:
        if run.proc.returncode is None:
            run.ctrl_c()
    finally:
        kill_all(alive(run.seen))


def poller_identities(address: str) -> set[str]:
    """Who polls the test's task queue for workflow tasks; a worker's identity is pid@host."""

    async def ask() -> set[str]:
        client = await Client.connect(address)
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace="default",
                task_queue=TaskQueue(name=TASK_QUEUE),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        return {poller.identity for poller in answer.pollers}

    loop = asyncio.new_event_loop()  # not asyncio.run: leave pytest-asyncio's loop alone
    try:
        return loop.run_until_complete(ask())
    finally:
        loop.close()


# ---- the tests -------------------------------------------------------------------------------
@pytest.mark.timeout(600)  # up to 270 s for one run, plus quick retries on a taken port
def test_up_starts_everything_healthy_runs_the_demo_and_stops_on_ctrl_c(tmp_path: Path):
    with running_up(tmp_path) as up:
        assert up.health == {"status": "ok", "database": "ok", "temporal": "ok"}
        key = (up.data_dir / "demo_api_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        up.wait_running(180)  # `up` says so once its demo automation run has ended
        runs = httpx.get(f"{up.api}/automation/runs", headers=headers, timeout=5).json()
        assert [r["status"] for r in runs["data"]] == ["completed"], runs
        run_id = runs["data"][0]["run_id"]
        assert f"automation run {run_id}: completed" in up.output.text, up.output.text[-3000:]
        notes = httpx.get(f"{up.api}/notifications", headers=headers, timeout=5).json()
        kinds = {n["notification_type"] for n in notes["data"]}
        assert {"automation_completed", "ai_image_success", "ai_content_success"} <= kinds
        balance = httpx.get(f"{up.api}/credits/balance", headers=headers, timeout=5).json()
        assert balance["credits"] < 2000
        _check_the_demo_published(up, headers)
        text = up.ctrl_c()
        _drop_demo_wordpress(up.data_dir)
        survivors = alive(up.seen)
    assert up.seen or not CAN_LIST_PROCESSES, "no child process of `igny8 up` was ever seen"
    assert "all stopped" in text, text[-2000:]
    assert not survivors, f"children still running after Ctrl-C (now killed): {survivors}"
    for port in up.ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after Ctrl-C"
    engine = make_engine(f"sqlite:///{up.data_dir / 'igny8.db'}")
    try:
        assert reconcile(engine) == []
    finally:
        engine.dispose()


def _check_the_demo_published(up: UpRun, headers: dict[str, str]) -> None:
    """`up` schedules the demo's newest articles a minute apart from ten seconds after its
    run; the first goes out to the local WordPress (real here when it can run), its link
    opens, and the calendar lists it as published."""
    site = httpx.get(f"{up.api}/sites", headers=headers, timeout=5).json()["data"][0]
    published: list[dict] = []

    def first_published() -> bool:
        page = httpx.get(
            f"{up.api}/sites/{site['id']}/content",
            params={"site_status": "published"},
            headers=headers,
            timeout=5,
        ).json()
        published[:] = page["data"]
        return bool(published)

    wait_for(first_published, 120, "the demo's first article published")
    post = published[0]
    wait_for(lambda: "published '" in up.output.text, 15, "`up` to say it published")
    page = httpx.get(post["external_url"], timeout=30, follow_redirects=True)
    assert page.status_code == 200, (post["external_url"], page.status_code)
    assert post["title"].split(":")[0] in page.text
    today = post["published_at"][:10]
    calendar = httpx.get(
        f"{up.api}/sites/{site['id']}/calendar",
        params={"start": today, "end": today},
        headers=headers,
        timeout=5,
    ).json()
    listed = {item["id"]: item for item in calendar["items"]}
    assert listed[post["id"]]["site_status"] == "published"
    assert listed[post["id"]]["external_url"] == post["external_url"]


def _drop_demo_wordpress(data_dir: Path) -> None:
    """The real WordPress's database is MariaDB's, outside tmp_path: drop it."""
    from cli.demo_publish import demo_wordpress_db
    from cli.wordpress import DatabaseConfig, drop_wordpress_database, wordpress_available

    if wordpress_available() is None:
        drop_wordpress_database(DatabaseConfig(demo_wordpress_db(data_dir)))


STOPS = [
    pytest.param(signal.SIGTERM, id="SIGTERM"),
    pytest.param(signal.SIGHUP, id="SIGHUP"),
    pytest.param(
        signal.SIGKILL,
        id="SIGKILL",
        marks=pytest.mark.skipif(
            not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only"
        ),
    ),
]


@pytest.mark.timeout(300)
@pytest.mark.skipif(not CAN_LIST_PROCESSES, reason="cannot list processes here")
@pytest.mark.parametrize("sig", STOPS)
def test_a_signal_to_up_stops_every_child_and_frees_every_port(tmp_path: Path, sig: int):
    """SIGTERM (a service manager, `kill`) and SIGHUP (the terminal closing) stop the stack
    as Ctrl-C does. SIGKILL cannot be caught: then the kernel kills the children
    (PR_SET_PDEATHSIG), less politely but just as surely."""
    with running_up(tmp_path, "--no-demo", extra_env=PINNED_ENV) as up:
        up.wait_running()
        assert up.roles() == FULL_STACK
        ours = {pid for pid, _ in up.seen}
        used = listeners(ours)
        # the demo's WordPress only runs with the demo
        stack_ports = {k: v for k, v in up.ports.items() if k != "DEMO_WORDPRESS_PORT"}
        configured: set[Listener] = {("127.0.0.1", port) for port in stack_ports.values()}
        assert configured <= used or not CAN_LIST_LISTENERS, (configured, used)
        output, took = up.stop(sig, STOP_BOUND_S)
        survivors = wait_gone(up.seen, 10) if sig == signal.SIGKILL else alive(up.seen)
    assert took is not None, f"up did not exit within {STOP_BOUND_S} s of {sig!r}\n{output}"
    assert not survivors, f"children outlived up (now killed): {survivors}\n{output[-2000:]}"
    if sig != signal.SIGKILL:
        assert "all stopped" in output, output[-2000:]
    taken = wait_listenable(used | configured, 5)
    # Other processes on this machine bind ephemeral ports too, and may take one `up` freed
    # before we look: a port only counts if one of ours, or no one we can see, holds it.
    unexplained = {where: who for where, who in taken.items() if not who or ours & set(who)}
    assert not unexplained, f"still taken after {sig!r}: {taken}"


@pytest.mark.timeout(300)
@pytest.mark.skipif(not CAN_LIST_PROCESSES, reason="cannot list processes here")
def test_a_killed_worker_is_replaced_and_the_stack_keeps_serving(tmp_path: Path):
    with running_up(tmp_path, "--no-demo", extra_env=PINNED_ENV) as up:
        up.wait_running()
        before = up.workers()
        assert len(before) == 2, up.roles()
        victim = min(before)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> set[int] | None:
            now = up.workers()
            return now if len(now) == 2 and len(now - before) == 1 else None

        after = wait_for(replaced, 30, "a new worker process replaces the killed one")
        assert victim not in after and up.proc.poll() is None
        (replacement,) = after - before
        address = f"127.0.0.1:{up.ports['TEMPORAL_PORT']}"
        wait_for(
            lambda: any(i.startswith(f"{replacement}@") for i in poller_identities(address)),
            30,
            f"the new worker (pid {replacement}) polls the task queue",
        )
        health = httpx.get(f"{up.api}/health", timeout=5).json()
        assert health == {"status": "ok", "database": "ok", "temporal": "ok"}
        output = up.ctrl_c()
        survivors = alive(up.seen)
    assert f"pid {victim}) exited (signal SIGKILL); restarting" in output, output[-2000:]
    assert "all stopped" in output, output[-2000:]
    assert not survivors, f"children still running after Ctrl-C (now killed): {survivors}"
