"""The embedded stack: Temporal dev server, simulator, worker and API as child processes.

Each child logs to `.data/logs/<name>.log`; `stop()` terminates them in reverse order
(SIGTERM, then SIGKILL after a grace period), so Ctrl-C leaves nothing running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.settings import PROJECT_ROOT, Settings
from core.temporal import search_attribute_flags, temporal_binary


class StackError(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Stack:
    settings: Settings
    children: list[Child] = field(default_factory=list)

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

    def _spawn(self, name: str, args: list[str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        proc = subprocess.Popen(
            args,
            cwd=PROJECT_ROOT,
            env=self.env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

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
        child = self._spawn("temporal", args)
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
        child = self._spawn("simulator", args)
        self._wait_http(child, f"{self.settings.simulator_url}/health", 30)

    def start_workers(self) -> None:
        """`worker_processes` workers on one task queue: Python runs one core per process."""
        workers = [
            self._spawn(f"worker-{n}", [sys.executable, "worker.py"])
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
        child = self._spawn("api", args)
        self._wait_http(child, f"{self.api_url}/api/v1/health", 60)

    def start_all(self) -> None:
        try:
            self.start_temporal()
            self.start_simulator()
            self.start_workers()
            self.start_api()
        except BaseException:
            self.stop()
            raise

    # ---- waiting and stopping --------------------------------------------------------
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

    def dead_children(self) -> list[Child]:
        return [c for c in self.children if c.proc.poll() is not None]

    def stop(self, grace_s: float = 10.0) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in reversed(self.children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.proc.wait(remaining)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        self.children.clear()
