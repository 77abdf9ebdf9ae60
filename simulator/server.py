"""Run the simulator: blocking (`run`) or in a background thread for tests and benchmarks.

The background helper binds the socket itself, so port 0 yields a free port that is known
before the server starts, and it returns only once `/health` answers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

from simulator.app import create_app
from simulator.config import SimConfig
from simulator.state import SimState


def run(host: str, port: int, config: SimConfig, log_level: str = "warning") -> None:
    """Serve until interrupted (Ctrl-C)."""
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=2,
    )


class SimulatorThread:
    """A simulator in a daemon thread; `url`, `app` (for direct state access) and `stop()`."""

    def __init__(
        self,
        config: SimConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.app = create_app(config)
        self._socket = _bind(host, port)
        bound_port = self._socket.getsockname()[1]
        self.url = f"http://{host}:{bound_port}"
        uv_config = uvicorn.Config(
            self.app,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=1,
            lifespan="off",
        )
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            daemon=True,
            name=f"simulator:{bound_port}",
        )

    @property
    def state(self) -> SimState:
        """Direct access to config and counters (same objects the HTTP endpoints use)."""
        state: SimState = self.app.state.sim
        return state

    def start(self, timeout_s: float = 10.0) -> SimulatorThread:
        """Start serving and wait until /health answers."""
        self._thread.start()
        _wait_healthy(self.url, timeout_s, self._thread)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask uvicorn to exit and wait for the thread (idempotent)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        with contextlib.suppress(OSError):
            self._socket.close()

    # Convenience controls over HTTP, exactly as external tools would use them.

    def configure(self, **changes: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/_sim/config", json=changes, timeout=5)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_sim/stats", timeout=5).json()

    def reset(self, *, restore_config: bool = True) -> None:
        """Zero the counters and, by default, restore the config the server started with."""
        query = "?config=true" if restore_config else ""
        httpx.post(f"{self.url}/_sim/reset{query}", timeout=5).raise_for_status()

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _wait_healthy(url: str, timeout_s: float, thread: threading.Thread) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the simulator thread exited during startup")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"the simulator at {url} did not become healthy in {timeout_s} s")
