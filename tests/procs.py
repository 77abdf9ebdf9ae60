"""Child processes in tests: stop them politely, then for sure."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen, timeout_s: float = 15) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout_s`; never left running."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
