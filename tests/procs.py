"""Child processes in tests: stop them politely, then for sure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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
