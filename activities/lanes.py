"""Provider lanes: at most one provider call at a time per lane of a batch, across threads
and worker processes.

A batch with `max_concurrency` C has C lanes. The workflow keeps a second generation
queued behind each lane's current one, so the next call starts the moment the provider
answers instead of after a full orchestration round trip (activity completion, workflow
task, dispatch), about 0.1 s under load, which would otherwise be paid C-wide on every wave.

A lane is an exclusive `flock` on `MEDIA_DIR/.lanes/<batch>/<lane>.lock`. Every worker
shares MEDIA_DIR already (the images go there), the lock is per open file, so it also
separates threads of one process, and the OS drops it when its process dies: a SIGKILLed
worker never strands a lane.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

LANES_DIR = ".lanes"
STOPPED = "stopped"
# A waiter blocks a thread in flock. The pool is per worker process, shared by every
# batch it serves; the worker sizes it to its activity slots (ACTIVITY_CONCURRENCY), so a
# waiter never queues behind another waiter's thread.
DEFAULT_WAITERS = 256
_NEEDS = "provider lanes need MEDIA_DIR on a filesystem with working flock (a local disk or volume)"


class LaneLocks:
    """Exclusive lanes as file locks under `root` (the media folder)."""

    def __init__(self, root: Path, max_waiters: int = DEFAULT_WAITERS) -> None:
        self.root = Path(root) / LANES_DIR
        self.max_waiters = max_waiters
        self._waiters: ThreadPoolExecutor | None = None

    def folder(self, batch_id: str) -> Path:
        """A digest, not the id itself: any id maps to one plain folder name of its own
        (no `..`, no separators), so removing it can never reach outside the lanes."""
        return self.root / hashlib.sha256(batch_id.encode()).hexdigest()[:32]

    @asynccontextmanager
    async def hold(self, batch_id: str, lane: int) -> AsyncIterator[None]:
        """Wait for the lane, then hold it for the block. A waiter that is cancelled
        gives the lane back as soon as its blocked thread gets it."""
        path = self.folder(batch_id) / f"{lane}.lock"
        pending = self._pool().submit(_acquire, path)
        try:
            fd = await asyncio.wrap_future(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(_release_when_acquired)
            raise
        try:
            yield
        finally:
            _release(fd)

    def check(self) -> None:
        """Refuse to run on a folder whose `flock` does not exclude (some network or FUSE
        mounts make it a no-op or an error): lanes would then let 2×C calls through."""
        probe = self.root / "probe.lock"
        try:
            first = _acquire(probe)
        except OSError as exc:
            raise RuntimeError(f"{self.root}: file locks fail ({exc}); {_NEEDS}") from exc
        second = os.open(probe, os.O_RDWR)
        try:
            fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # excluded, as it must be
        except OSError as exc:
            raise RuntimeError(f"{self.root}: file locks fail ({exc}); {_NEEDS}") from exc
        finally:
            os.close(second)
            _release(first)
            probe.unlink(missing_ok=True)
        raise RuntimeError(f"{self.root}: file locks do not exclude; {_NEEDS}")

    def stop(self, batch_id: str) -> None:
        """Paused or cancelled: an image that gets its lane from now on does not call the
        provider (calls already there finish). A marker file, so every worker sees it."""
        folder = self.folder(batch_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STOPPED).touch()

    def go(self, batch_id: str) -> None:
        (self.folder(batch_id) / STOPPED).unlink(missing_ok=True)

    def stopped(self, batch_id: str) -> bool:
        return (self.folder(batch_id) / STOPPED).exists()

    def remove(self, batch_id: str) -> None:
        """Drop a finished batch's lock files. Its own generations are all settled by then;
        only a stray attempt that outlived its heartbeat could still come, and it would
        merely recreate an empty folder."""
        shutil.rmtree(self.folder(batch_id), ignore_errors=True)

    def close(self) -> None:
        if self._waiters is not None:
            self._waiters.shutdown(wait=False, cancel_futures=True)
            self._waiters = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._waiters is None:
            self._waiters = ThreadPoolExecutor(self.max_waiters, thread_name_prefix="lane")
        return self._waiters


def _acquire(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _release_when_acquired(done: Future[int]) -> None:
    if not done.cancelled() and done.exception() is None:
        _release(done.result())
