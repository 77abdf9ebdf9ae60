"""Child processes in tests: stop them politely, then for sure; find what they left.

Process listing uses psutil if installed, else /proc (Linux); a process is known by its pid
and start time together, since a pid alone may be reused.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

try:
    import psutil  # type: ignore[import-not-found]
except ImportError:  # not a dependency: /proc does the same on Linux
    psutil = None

Proc = tuple[int, float]  # pid and start time
T = TypeVar("T")
CAN_LIST_PROCESSES = psutil is not None or Path("/proc/self/stat").exists()
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


def stop(proc: subprocess.Popen, timeout_s: float = 15) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout_s`; never left running."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


ROOT = Path(__file__).resolve().parent.parent


def worker_env(db_url: str, temporal_address: str, task_queue: str, sim_url: str, media: Path,
               **extra: str) -> dict[str, str]:  # fmt: skip
    """The environment of a `worker.py` child process wired to this test's parts."""
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": db_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "TASK_QUEUE": task_queue,
        "SIMULATOR_HOST": "127.0.0.1",
        "SIMULATOR_PORT": sim_url.rsplit(":", 1)[1],
        "MEDIA_DIR": str(media),
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    return env


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=env)


def free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """Distinct free ports: every socket stays bound until all are picked."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in names]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return {name: int(sock.getsockname()[1]) for name, sock in zip(names, socks, strict=True)}


def start_time(pid: int) -> float | None:
    """When `pid` started, or None if it is gone (a zombie counts as gone)."""
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
        except psutil.Error:
            return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else float(fields[19])


def descendants(pid: int) -> set[Proc]:
    """Every live process below `pid` (psutil if installed, else /proc)."""
    if psutil is not None:
        try:
            found = {(c.pid, c.create_time()) for c in psutil.Process(pid).children(True)}
        except psutil.Error:
            return set()
        return found
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if CAN_LIST_PROCESSES else ():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            started = start_time(child)
            if started is not None:
                found.add((child, started))
                todo.append(child)
    return found


def alive(procs: set[Proc]) -> set[Proc]:
    return {(pid, started) for pid, started in procs if start_time(pid) == started}


def kill_all(procs: set[Proc]) -> None:
    for pid, _ in procs:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:  # a session leader: take its whole group
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


def wait_gone(procs: set[Proc], timeout_s: float) -> set[Proc]:
    """The processes still alive after up to `timeout_s` (the kernel kills asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(procs)


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll `check` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def command_line(pid: int) -> list[str]:
    """`pid`'s argv, or [] if it is gone."""
    if psutil is not None:
        try:
            return list(psutil.Process(pid).cmdline())
        except psutil.Error:
            return []
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


# ---- listening sockets (Linux /proc only) ---------------------------------------------------
Listener = tuple[str, int]  # the bound address ("127.0.0.1", "::", ...) and port
CAN_LIST_LISTENERS = Path("/proc/self/net/tcp").exists()


def listeners(pids: set[int]) -> set[Listener]:
    """The TCP sockets these processes listen on, found through /proc (empty elsewhere)."""
    inodes = set().union(*(_socket_inodes(pid) for pid in pids))
    return {where for inode, where in _listening_sockets().items() if inode in inodes}


def listening_at(port: int) -> dict[int, list[str]]:
    """Every process (pid → argv) with a listening socket on `port`, for failure messages."""
    inodes = {inode for inode, (_, p) in _listening_sockets().items() if p == port}
    pids = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()] if inodes else []
    return {pid: command_line(pid) for pid in pids if _socket_inodes(pid) & inodes}


def _socket_inodes(pid: int) -> set[str]:
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    found.add(target[len("socket:[") : -1])
    return found


def _listening_sockets() -> dict[str, Listener]:
    """Inode → (address, port) of every listening TCP socket in this network namespace."""
    found: dict[str, Listener] = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == TCP_LISTEN:
                    hex_addr, hex_port = cols[1].split(":")
                    found[cols[9]] = (_address(hex_addr, family), int(hex_port, 16))
    return found


def _address(hex_addr: str, family: int) -> str:
    """/proc/net/tcp* print an address as 32-bit words, each in host byte order."""
    raw = bytes.fromhex(hex_addr)
    step = -1 if sys.byteorder == "little" else 1
    words = b"".join(raw[i : i + 4][::step] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, words)


def can_listen(where: Listener) -> bool:
    """Whether a server could listen at `where` now. SO_REUSEADDR, as servers set it, so a
    TIME_WAIT left by a closed connection does not count, but any listener still does."""
    address, port = where
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
            sock.listen()
        except OSError:
            return False
    return True


def wait_listenable(
    places: set[Listener], timeout_s: float
) -> dict[Listener, dict[int, list[str]]]:
    """The places still not listenable after up to `timeout_s` (a killed process's sockets
    may close a moment after it is gone), each with who listens there now."""
    deadline = time.monotonic() + timeout_s
    while (taken := {where for where in places if not can_listen(where)}) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    return {where: listening_at(where[1]) for where in taken}
