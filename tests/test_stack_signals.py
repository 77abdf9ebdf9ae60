"""How the embedded stack (cli/stack.py) handles its children, with stand-in children so
each case takes a second, not a Temporal start: stopping one that ignores SIGTERM (and
what it started), children dying with a SIGKILLed parent, worker restarts and crash
loops, and SIGTERM/SIGHUP taking Ctrl-C's path. tests/test_stack.py shows the same on the
real stack."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.stack import Child, RestartPolicy, Stack, StopRequested
from core.settings import Settings
from tests.procs import (
    CAN_LIST_PROCESSES,
    alive,
    command_line,
    kill_all,
    start_time,
    wait_for,
    wait_gone,
)

ROOT = Path(__file__).resolve().parent.parent
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
CRASHER = [sys.executable, "-c", "raise SystemExit(3)"]
# Ignores SIGTERM, and so does the grandchild it starts in its own process group.
STUBBORN = """\
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
grandchild = subprocess.Popen([sys.executable, "-c", code])
print("ready", grandchild.pid, flush=True)
time.sleep(60)
"""
# A parent that starts one child through the stack, says its pid, and waits to be killed.
PARENT = """\
import sys, time
from cli.stack import Stack
from core.settings import Settings
stack = Stack(Settings(_env_file=None, data_dir=sys.argv[1]))
print(stack.spawn("sleeper", sys.argv[2:]).proc.pid, flush=True)
time.sleep(60)
"""
# A parent that never calls stop(): a Ctrl-C outside any try/finally ends it.
ABANDONING_PARENT = """\
import sys, time
from cli.stack import Stack
from core.settings import Settings
stack = Stack(Settings(_env_file=None, data_dir=sys.argv[1]))
child = stack.spawn("polite", sys.argv[2:])
while "ready" not in child.log_path.read_text():
    time.sleep(0.05)
raise KeyboardInterrupt
"""
POLITE = """\
import signal, sys, time
def bye(*_):
    print("stopped politely", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
time.sleep(60)
"""
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

pytestmark = pytest.mark.skipif(not CAN_LIST_PROCESSES, reason="cannot list processes here")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack with nothing started; whatever a test spawns is stopped afterwards, and the
    signal handlers pytest had are back even if the test failed halfway."""
    handlers = {sig: signal.getsignal(sig) for sig in HANDLED}
    made = Stack(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    try:
        yield made
    finally:
        made.stop(grace_s=1)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def is_running(pid: int) -> bool:
    return start_time(pid) is not None


def wait_ready(child: Child) -> int:
    """The grandchild pid STUBBORN reports once it ignores SIGTERM."""
    line = wait_for(
        lambda: next((ln for ln in child.log_path.read_text().splitlines() if "ready" in ln), ""),
        10,
        f"{child.name} is ready",
    )
    return int(line.split()[1])


# ---- stopping ------------------------------------------------------------------------------
def test_stop_kills_a_child_that_ignores_sigterm_and_what_it_started(stack: Stack) -> None:
    child = stack.spawn("stubborn", [sys.executable, "-c", STUBBORN])
    grandchild = wait_ready(child)
    started = time.monotonic()
    stack.stop(grace_s=0.5)
    assert time.monotonic() - started < 5
    assert child.proc.returncode == -signal.SIGKILL
    assert not wait_gone({(grandchild, start_time(grandchild) or 0.0)}, 5)
    assert stack.children == []


def test_a_signal_while_stopping_cuts_the_grace_short_instead_of_abandoning_children(
    stack: Stack,
) -> None:
    child = stack.spawn("stubborn", [sys.executable, "-c", STUBBORN])
    wait_ready(child)
    stack.trap_stop_signals()  # a signal before stop() swaps handlers raises, never kills pytest

    def second_sigterm() -> None:  # as soon as stop() listens for it
        wait_for(lambda: signal.getsignal(signal.SIGTERM) == stack._hurry_up, 10, "stop() runs")
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=second_sigterm, daemon=True)
    sender.start()
    started = time.monotonic()
    stack.stop(grace_s=60)
    sender.join(5)
    assert time.monotonic() - started < 10
    assert child.proc.returncode == -signal.SIGKILL


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_children_die_with_a_sigkilled_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), *SLEEPER],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        child = {(pid, start_time(pid) or 0.0)}
        # past the guard: the real program runs (`python -c …`, not `python -I -S -c …`)
        wait_for(lambda: command_line(pid)[1:2] == ["-c"], 10, "the child execs its program")
        parent.kill()
        parent.wait()
        assert not wait_gone(child, 5), "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()
        kill_all(alive(child))


def test_a_parent_that_exits_without_stop_still_stops_its_children_politely(
    tmp_path: Path,
) -> None:
    """atexit runs stop(): SIGTERM first, where PR_SET_PDEATHSIG alone would SIGKILL."""
    parent = subprocess.run(
        [sys.executable, "-c", ABANDONING_PARENT, str(tmp_path), sys.executable, "-c", POLITE],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    assert parent.returncode != 0, "the KeyboardInterrupt should end the parent"
    log = (tmp_path / "logs" / "polite.log").read_text()
    assert "stopped politely" in log, (log, parent.stderr.decode()[-2000:])


# ---- crashes -------------------------------------------------------------------------------
def test_a_crashed_worker_is_restarted_after_its_back_off(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.restart_policy = RestartPolicy(first_delay_s=0.3, max_delay_s=0.3)
    worker = stack.spawn("worker-1", SLEEPER, restartable=True)
    first = worker.proc.pid
    os.kill(first, signal.SIGKILL)
    worker.proc.wait()
    crashed = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="igny8.stack"):
        assert stack.supervise() == [], "a crashed worker must not stop the stack"
        wait_for(lambda: stack.supervise() == [] and worker.proc.pid != first, 10, "a restart")
    assert time.monotonic() - crashed >= 0.3, "restarted before its back-off"
    assert is_running(worker.proc.pid)
    assert f"worker-1 (pid {first}) exited (signal SIGKILL); restarting it in 0.3 s" in caplog.text
    assert f"worker-1 restarted (pid {worker.proc.pid})" in caplog.text


def test_a_crash_looping_worker_stops_the_stack(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.restart_policy = RestartPolicy(first_delay_s=0.01, max_delay_s=0.01, max_restarts=3)
    worker = stack.spawn("worker-1", CRASHER, restartable=True)
    pids: set[int] = set()

    def fatal() -> list[Child]:
        pids.add(worker.proc.pid)
        return stack.supervise()

    with caplog.at_level(logging.WARNING, logger="igny8.stack"):
        assert wait_for(fatal, 20, "the stack gives up on the worker") == [worker]
    assert worker.gave_up and len(pids) == 1 + 3, pids  # the start and three restarts
    assert "exited (exit code 3), 4 times within 60 s: a crash loop" in caplog.text


def test_the_other_children_stop_the_stack_when_they_exit(stack: Stack) -> None:
    api = stack.spawn("api", CRASHER)
    api.proc.wait()
    assert stack.supervise() == [api]
    assert stack.dead_children() == [api], "`up` polls dead_children(): it must agree"


def test_back_off_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(first_delay_s=0.5, max_delay_s=8)
    assert [policy.delay_s(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 8, 8]


# ---- signals -------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_raise_what_ctrl_c_raises(stack: Stack, sig: int) -> None:
    before = {s: signal.getsignal(s) for s in HANDLED}
    stack.trap_stop_signals()
    with pytest.raises(KeyboardInterrupt) as raised:
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler runs in this thread at once, ending the sleep
    assert isinstance(raised.value, StopRequested)
    stack.stop()
    assert {s: signal.getsignal(s) for s in HANDLED} == before, "stop() restores handlers"


def test_an_ignored_sighup_stays_ignored(stack: Stack) -> None:
    """`nohup igny8 up` must survive its terminal closing."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stack.trap_stop_signals()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    os.kill(os.getpid(), signal.SIGHUP)  # nothing happens
    stack.stop()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
