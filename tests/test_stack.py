"""`igny8 up` (what `make run` runs): everything starts, /health reports the database and
Temporal ok, a batch runs through the real processes, and Ctrl-C stops every child."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_health(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"igny8 up exited early with {proc.returncode}"
        try:
            last = httpx.get(url, timeout=2).json()
            if last.get("temporal") == "ok" and last.get("database") == "ok":
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"never healthy; last answer {last}")


def test_up_starts_everything_healthy_runs_the_demo_and_stops_on_ctrl_c(tmp_path: Path):
    ports = {
        k: free_port() for k in ("API_PORT", "TEMPORAL_PORT", "TEMPORAL_UI_PORT", "SIMULATOR_PORT")
    }
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "OPENAI_API_KEY"}},
        **{k: str(v) for k, v in ports.items()},
        "DATA_DIR": str(tmp_path / "data"),
        "TEMPORAL_ADDRESS": "",
        "SIMULATOR_LATENCY": "0.05",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        health = wait_health(f"http://127.0.0.1:{ports['API_PORT']}/api/v1/health", proc)
        assert health == {"status": "ok", "database": "ok", "temporal": "ok"}
        key = (tmp_path / "data" / "demo_api_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        api = f"http://127.0.0.1:{ports['API_PORT']}/api/v1"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the demo batch, run by `up` itself
            notes = httpx.get(f"{api}/notifications", headers=headers, timeout=5).json()
            if any(n["notification_type"] == "ai_image_success" for n in notes["data"]):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the demo batch did not finish")
        assert (
            httpx.get(f"{api}/credits/balance", headers=headers, timeout=5).json()["credits"] < 2000
        )
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert "all stopped" in text, text[-2000:]
    for port in ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after Ctrl-C"
