"""`igny8 up` (what `make run` runs): everything starts, /health reports the database and
Temporal ok, a batch runs through the real processes, and Ctrl-C stops every child."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

try:
    import psutil  # type: ignore[import-not-found]
except ImportError:  # not a dependency: /proc does the same on Linux
    psutil = None

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
PORT_NAMES = ("API_PORT", "TEMPORAL_PORT", "TEMPORAL_UI_PORT", "SIMULATOR_PORT")
# A free port is only known free when picked; something else may take it before `up`
# binds it. Then `up` exits at start, and the test tries again on fresh ports.
ATTEMPTS = 3
ADDRESS_IN_USE = ("already in use", "address in use")


class ExitedEarly(Exception):
    """`igny8 up` exited before the stack was healthy."""


def free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """Distinct free ports: every socket stays bound until all are picked."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in names]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return {name: int(sock.getsockname()[1]) for name, sock in zip(names, socks, strict=True)}


# ---- the processes `up` starts --------------------------------------------------------------
# Each child of `up` runs in its own session (cli/stack.py: start_new_session=True), so a
# signal to `up`'s process group never reaches them. The test notes them while they run, to
# prove afterwards that none survived, and to kill any that did so nothing leaks.
Proc = tuple[int, float]  # pid and start time (a pid alone may be reused)
CAN_LIST_PROCESSES = psutil is not None or Path("/proc/self/stat").exists()


def _start_time(pid: int) -> float | None:
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
            started = _start_time(child)
            if started is not None:
                found.add((child, started))
                todo.append(child)
    return found


def alive(procs: set[Proc]) -> set[Proc]:
    return {(pid, started) for pid, started in procs if _start_time(pid) == started}


def kill_all(procs: set[Proc]) -> None:
    for pid, _ in procs:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:  # a session leader: take its whole group
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


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


def start_up(data_dir: Path, ports: dict[str, int]) -> subprocess.Popen:
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "OPENAI_API_KEY"}},
        **{k: str(v) for k, v in ports.items()},
        "DATA_DIR": str(data_dir),
        "TEMPORAL_ADDRESS": "",
        "SIMULATOR_LATENCY": "0.05",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def ctrl_c(proc: subprocess.Popen, timeout_s: float = 60) -> str:
    """Ctrl-C (SIGINT to the terminal's process group) and `up`'s whole output."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return out.decode(errors="replace") + f"\n[test] up ignored Ctrl-C for {timeout_s} s"
    return out.decode(errors="replace")


def early_exit_output(proc: subprocess.Popen, data_dir: Path) -> str:
    out, _ = proc.communicate()
    logs = [
        f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
        for log in sorted((data_dir / "logs").glob("*.log"))
    ]
    return "\n".join([out.decode(errors="replace"), *logs])


@pytest.mark.timeout(600)  # up to 270 s for one run, plus quick retries on a taken port
def test_up_starts_everything_healthy_runs_the_demo_and_stops_on_ctrl_c(tmp_path: Path):
    for attempt in range(1, ATTEMPTS + 1):
        ports = free_ports(PORT_NAMES)
        data_dir = tmp_path / f"data-{attempt}"
        seen: set[Proc] = set()
        proc = start_up(data_dir, ports)
        try:
            api = f"http://127.0.0.1:{ports['API_PORT']}/api/v1"
            try:
                health = wait_health(f"{api}/health", proc, seen)
            except ExitedEarly as exc:
                output = early_exit_output(proc, data_dir)
                if attempt < ATTEMPTS and any(m in output.lower() for m in ADDRESS_IN_USE):
                    continue  # a port was taken after we picked it: fresh ports
                raise AssertionError(f"{exc}\n{output[-4000:]}") from None
            assert health == {"status": "ok", "database": "ok", "temporal": "ok"}
            key = (data_dir / "demo_api_key").read_text().strip()
            headers = {"Authorization": f"Bearer {key}"}
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:  # the demo batch, run by `up` itself
                notes = httpx.get(f"{api}/notifications", headers=headers, timeout=5).json()
                if any(n["notification_type"] == "ai_image_success" for n in notes["data"]):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError("the demo batch did not finish")
            balance = httpx.get(f"{api}/credits/balance", headers=headers, timeout=5).json()
            assert balance["credits"] < 2000
        finally:
            try:
                seen |= descendants(proc.pid)
                text = ctrl_c(proc) if proc.returncode is None else ""
            finally:
                survivors = alive(seen)
                kill_all(survivors)
        break
    assert seen or not CAN_LIST_PROCESSES, "no child process of `igny8 up` was ever seen"
    assert "all stopped" in text, text[-2000:]
    assert not survivors, f"children still running after Ctrl-C (now killed): {survivors}"
    for port in ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after Ctrl-C"
