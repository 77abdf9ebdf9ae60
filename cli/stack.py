"""The embedded stack: Temporal dev server, simulator, workers and API as child processes.

Each child logs to `.data/logs/<name>.log`. What `igny8 up` promises about them:

Stopping. `stop()` sends SIGTERM to each child's process group (newest first), waits up
to a grace period for all of them, then SIGKILLs what is left, so a child that ignores a
polite stop still goes. Ctrl-C, SIGTERM (a service manager, `kill`) and SIGHUP (the
terminal closing) all take that one path: `start_all()` makes SIGTERM and SIGHUP raise
`StopRequested`, a KeyboardInterrupt, where Ctrl-C raises KeyboardInterrupt itself. A
signal the caller ignores stays ignored (`nohup igny8 up` survives its terminal). A
further signal while stopping cuts the grace period short instead of abandoning children.

Orphans. Children run in their own sessions, so Ctrl-C at the terminal reaches `up` alone
and `up` stops them in order; but then nothing stops them if `up` ends without `stop()`.
An interpreter exit runs it (atexit), e.g. after a signal that lands between start-up and
the caller's try/finally. A death nothing can catch (SIGKILL, the OOM killer) is covered
on Linux only: every child starts with PR_SET_PDEATHSIG=SIGKILL, so the kernel kills it
the moment `up` dies. A tiny launcher sets it (`python -I -S -c`: prctl, then exec of the
real program, which keeps the setting) rather than `preexec_fn`, which may deadlock while
threads run (rich's spinner does during start-up). The setting follows the thread that
spawned the child, not the process, so it is used only for children the main thread
spawns, and supervision is polled by the caller rather than run in a thread of its own.
Not covered: macOS (no such setting), and what a child itself starts (`stop()` takes
each child's process group, but PR_SET_PDEATHSIG is not inherited).

Crashes. A worker is stateless (Temporal re-dispatches what it held), so one that exits
while the stack runs is started again after a back-off, with a log line; more than
`RestartPolicy.max_restarts` exits within `window_s` is a crash loop, which stops the
stack like any other fatal exit. The Temporal server, the simulator and the API are not
restarted: their exit stops the stack, since the addresses `up` printed would be dead.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from core.settings import PROJECT_ROOT, Settings
from core.temporal import search_attribute_flags, temporal_binary, version_drift

log = logging.getLogger("igny8.stack")

# Signals that stop `up` the way Ctrl-C (SIGINT) does.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

# Run in each child by `python -I -S -c` before it becomes the real program (argv[2:]).
# PR_SET_PDEATHSIG is option 1 (linux/prctl.h). If `up` died before prctl took effect the
# child was already re-parented, so it must not start at all.
ORPHAN_GUARD = """\
import os, sys
try:
    import ctypes, signal
    guarded = ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0) == 0
except (OSError, AttributeError):
    guarded = False
if not guarded:
    print("igny8 up: PR_SET_PDEATHSIG failed; this child may outlive igny8 up", file=sys.stderr)
if os.getppid() != int(sys.argv[1]):
    sys.exit("igny8 up exited while this child was starting")
os.execv(sys.argv[2], sys.argv[2:])
"""


class StackError(RuntimeError):
    pass


class StopRequested(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt, so callers that
    handle Ctrl-C (`except KeyboardInterrupt`, `finally: stack.stop()`) handle these too."""


@dataclass(frozen=True)
class RestartPolicy:
    """When a crashed worker starts again, and when its crashing counts as a loop."""

    first_delay_s: float = 0.5  # doubled for each recent exit ...
    max_delay_s: float = 8.0  # ... up to this
    window_s: float = 60.0  # exits older than this are forgiven
    max_restarts: int = 5  # one more exit within the window stops the stack

    def delay_s(self, recent_exits: int) -> float:
        return min(self.first_delay_s * 2 ** max(recent_exits - 1, 0), self.max_delay_s)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)
    restartable: bool = False
    exits: list[float] = field(default_factory=list)  # monotonic times of recent exits
    restart_at: float | None = None  # when a crashed restartable child starts again
    gave_up: bool = False  # a crash loop: no more restarts


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _signal_group(pid: int, sig: int) -> None:
    """Signal a child's whole process group (it leads one: start_new_session), so nothing
    it started itself is left behind. A group that is gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise StopRequested(signal.Signals(signum).name)


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


@dataclass(eq=False)  # a stack owns processes: equal only to itself
class Stack:
    settings: Settings
    children: list[Child] = field(default_factory=list)
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    _saved_handlers: dict[int, Any] = field(default_factory=dict, init=False, repr=False)
    _hurry: bool = field(default=False, init=False, repr=False)

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def env(self) -> dict[str, str]:
        """Children inherit the environment plus the resolved addresses."""
        env = dict(os.environ)
        env["DATABASE_URL"] = self.settings.database_url
        env["TEMPORAL_ADDRESS"] = self.temporal_address
        env["TASK_QUEUE"] = self.settings.task_queue
        env["SIMULATOR_PORT"] = str(self.settings.simulator_port)
        env["MEDIA_DIR"] = str(self.settings.media_dir)
        env["DATA_DIR"] = str(self.settings.data_dir)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @property
    def temporal_address(self) -> str:
        return self.settings.temporal_address or f"127.0.0.1:{self.settings.temporal_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    # ---- children ------------------------------------------------------------------
    def spawn(self, name: str, args: list[str], *, restartable: bool = False) -> Child:
        """Start `args` as a child the stack stops (and, if `restartable`, restarts)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        child = Child(name, self._popen(args, log_path), log_path, args, restartable)
        self.children.append(child)
        atexit.unregister(self.stop)  # registered once, however many children
        atexit.register(self.stop)  # a caller that exits without stop() still stops them
        return child

    def _popen(self, args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log_file:  # the child keeps its own copy
            return subprocess.Popen(
                self._guarded(args),
                cwd=PROJECT_ROOT,
                env=self.env(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            )

    @staticmethod
    def _guarded(args: list[str]) -> list[str]:
        """`args` behind the orphan guard where it works: Linux, spawned by the main thread."""
        if not sys.platform.startswith("linux") or not _on_main_thread():
            return args
        return [sys.executable, "-I", "-S", "-c", ORPHAN_GUARD, str(os.getpid()), *args]

    def _require_free(self, name: str, port: int) -> None:
        if port_open("127.0.0.1", port):
            raise StackError(
                f"port {port} for the {name} is already in use; stop what runs there "
                f"or set another port in the environment"
            )

    # ---- the parts -----------------------------------------------------------------
    def start_temporal(self) -> None:
        if self.settings.temporal_address:
            return  # an external cluster
        self._require_free("Temporal server", self.settings.temporal_port)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        if drift := version_drift(temporal_binary()):  # production runs TEMPORAL_VERSIONS
            log.warning("%s", drift)
        args = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.settings.temporal_port),
            "--ui-port",
            str(self.settings.temporal_ui_port),
            "--db-filename",
            str(self.settings.data_dir / "temporal.db"),
            "--namespace",
            self.settings.temporal_namespace,
            "--log-level",
            "warn",
            *search_attribute_flags(),
        ]
        child = self.spawn("temporal", args)
        self._wait_port(child, "127.0.0.1", self.settings.temporal_port, 60)

    def start_simulator(self) -> None:
        if not self.settings.uses_simulator:
            return
        self._require_free("simulator", self.settings.simulator_port)
        args = [
            sys.executable,
            "-m",
            "simulator",
            "--host",
            self.settings.simulator_host,
            "--port",
            str(self.settings.simulator_port),
            "--latency",
            os.environ.get("SIMULATOR_LATENCY", "0.3"),
        ]
        child = self.spawn("simulator", args)
        self._wait_http(child, f"{self.settings.simulator_url}/health", 30)

    def start_workers(self) -> None:
        """`worker_processes` workers on one task queue: Python runs one core per process.

        A worker that exits at once is misconfigured, not crashed: that fails the start."""
        workers = [
            self.spawn(f"worker-{n}", [sys.executable, "worker.py"], restartable=True)
            for n in range(1, self.settings.worker_processes + 1)
        ]
        time.sleep(1.0)
        for child in workers:
            if child.proc.poll() is not None:
                raise StackError(f"the {child.name} exited at start; see {child.log_path}")

    def start_api(self) -> None:
        self._require_free("API", self.settings.api_port)
        args = [
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:create_app",
            "--factory",
            "--host",
            self.settings.api_host,
            "--port",
            str(self.settings.api_port),
            "--log-level",
            "warning",
        ]
        child = self.spawn("api", args)
        self._wait_http(child, f"{self.api_url}/api/v1/health", 60)

    def start_all(self) -> None:
        """Start every part; SIGTERM and SIGHUP stop them like Ctrl-C from here on."""
        self.trap_stop_signals()
        try:
            self.start_temporal()
            self.start_simulator()
            self.start_workers()
            self.start_api()
        except BaseException:
            self.stop()
            raise

    # ---- waiting -------------------------------------------------------------------
    def _wait_port(self, child: Child, host: str, port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise StackError(f"the {child.name} exited at start; see {child.log_path}")
            if port_open(host, port):
                return
            time.sleep(0.2)
        raise StackError(f"the {child.name} did not open port {port}; see {child.log_path}")

    def _wait_http(self, child: Child, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise StackError(f"the {child.name} exited at start; see {child.log_path}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise StackError(f"the {child.name} did not answer {url}; see {child.log_path}")

    # ---- supervision ---------------------------------------------------------------
    def supervise(self) -> list[Child]:
        """One round: restart the crashed workers whose back-off is over, and return the
        children whose exit stops the stack (a worker only once it crash-loops).

        The caller polls this from its main thread (`up` does, twice a second) instead of
        a supervising thread, because PR_SET_PDEATHSIG ties a child to its spawning thread."""
        now = time.monotonic()
        fatal: list[Child] = []
        for child in self.children:
            if child.proc.poll() is None:
                continue
            if child.restartable and not child.gave_up and child.restart_at is None:
                self._note_crash(child, now)
            if not child.restartable or child.gave_up:
                fatal.append(child)
            elif child.restart_at is not None and now >= child.restart_at:
                self._restart(child)
        return fatal

    def dead_children(self) -> list[Child]:
        """The children whose exit stops the stack. `up` polls this, so it supervises too:
        see `supervise`."""
        return self.supervise()

    def _note_crash(self, child: Child, now: float) -> None:
        policy = self.restart_policy
        child.exits = [t for t in child.exits if now - t < policy.window_s] + [now]
        how = _describe_exit(child.proc.returncode)
        if len(child.exits) > policy.max_restarts:
            child.gave_up = True
            log.error(
                "%s exited (%s), %d times within %.0f s: a crash loop; not restarting it (see %s)",
                child.name,
                how,
                len(child.exits),
                policy.window_s,
                child.log_path,
            )
            return
        delay = policy.delay_s(len(child.exits))
        child.restart_at = now + delay
        log.warning(
            "%s (pid %d) exited (%s); restarting it in %.1f s (see %s)",
            child.name,
            child.proc.pid,
            how,
            delay,
            child.log_path,
        )

    def _restart(self, child: Child) -> None:
        _signal_group(child.proc.pid, signal.SIGKILL)  # whatever the dead one left behind
        with child.log_path.open("a") as log_file:
            log_file.write(f"\n[igny8 up] restarting {child.name}\n")
        child.proc = self._popen(child.args, child.log_path)
        child.restart_at = None
        log.warning("%s restarted (pid %d)", child.name, child.proc.pid)

    # ---- stopping ------------------------------------------------------------------
    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every child's group (newest first), wait up to `grace_s` for them all,
        then SIGKILL the rest. Ctrl-C, SIGTERM or SIGHUP meanwhile only end the grace
        period early: an interrupted stop would leave children running."""
        self._hurry = False
        self._catch_signals_while_stopping()
        try:
            children = list(reversed(self.children))
            for child in children:
                if child.proc.poll() is None:
                    _signal_group(child.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for child in children:
                self._wait_or_kill(child, deadline)
            self.children.clear()
        finally:
            self._restore_signals()
        atexit.unregister(self.stop)

    def _wait_or_kill(self, child: Child, deadline: float) -> None:
        while child.proc.poll() is None and not self._hurry and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(0.1)
        if child.proc.poll() is None:
            log.warning("%s did not stop in time; killing it", child.name)
            _signal_group(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
        _signal_group(child.proc.pid, signal.SIGKILL)  # anything it left in its group

    # ---- signals -------------------------------------------------------------------
    def trap_stop_signals(self) -> None:
        """From now on SIGTERM and SIGHUP raise StopRequested, as SIGINT raises
        KeyboardInterrupt; `stop()` gives back the handlers it found. (`start_all` calls this.)"""
        self._install({sig: _raise_stop for sig in STOP_SIGNALS})

    def _catch_signals_while_stopping(self) -> None:
        self._install({sig: self._hurry_up for sig in (signal.SIGINT, *STOP_SIGNALS)})

    def _hurry_up(self, _signum: int, _frame: FrameType | None) -> None:
        self._hurry = True

    def _install(self, handlers: dict[signal.Signals, Any]) -> None:
        """Set handlers, remembering the caller's; leave alone a signal the caller ignores
        (`nohup`), and do nothing off the main thread, where Python cannot set handlers."""
        if not _on_main_thread():
            return
        for sig, handler in handlers.items():
            current = signal.getsignal(sig)
            if sig not in self._saved_handlers and current in (signal.SIG_IGN, None):
                continue  # ignored, or set outside Python (cannot be restored)
            self._saved_handlers.setdefault(sig, current)
            signal.signal(sig, handler)

    def _restore_signals(self) -> None:
        if not _on_main_thread():
            return
        for sig, handler in self._saved_handlers.items():
            signal.signal(sig, handler)
        self._saved_handlers.clear()
