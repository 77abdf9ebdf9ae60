"""Live run snapshots for Server-Sent Events, shared by every watcher of a run.

One watcher task per run in this API process asks the workflow for its progress (and the
ledger for the balance) every `TICK_S`, and sends a snapshot to every subscriber only when
something changed: a hundred watchers of one run cost the same one query per tick as one
watcher, never a Temporal query per watcher per tick. The task ends when its last
subscriber leaves or the run finishes.

On PostgreSQL the workflow also pushes each change of its progress the moment it makes
it (domain/progress_feed.py): one listener per API process hears every run's notes and
turns a watched run's note into a snapshot at once (`Apply`: the ledger balance and the
titles added, no Temporal query). The poll stays for what no note tells (the balance
falling as child batches charge) and for a note that was lost, at FED_TICK_S while a
run's notes keep coming, at TICK_S otherwise. Snapshots carry the progress's version; one
older than a snapshot already sent is dropped, so a slow poll answer never takes
watchers back. A run's snapshots go out at most every SEND_GAP_S, each with all that
changed meanwhile: every snapshot costs a send per watcher. bench/watchers.py, 100
watchers, each change dated by the workflow: p50 235-250 / p99 561-692 ms polling only
(the wait for the next tick, then a query waiting behind the workflow's tasks on a busy
worker); p50 86-102 / p99 175-241 ms with the notes.

What a snapshot adds from elsewhere at its own pace (the live counts of a run's image
batches, one query per batch) is a `Side`, polled by a second task: a slow batch query
then delays only its own numbers, never the run's progress. bench/watchers.py measured
the run's progress reaching watchers p50 352 / p99 1,317 ms with the batch queries inside
the tick, when each tick waited for the run's query and then for its batches' queries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import StreamingResponse

from domain import progress_feed
from domain.progress_feed import Note

log = logging.getLogger("igny8.api.events")

TICK_S = 0.2
FED_TICK_S = 1.0  # the poll's pace while notes keep coming for the run
FED_FOR_S = 2.0  # ... that is, while the last came this recently
SEND_GAP_S = 0.1  # snapshots of one run are sent at most this often
KEEPALIVE_S = 15.0
FINAL = frozenset({"completed", "cancelled", "failed", "skipped"})  # skipped: a run's

Fetch = Callable[[], Awaitable[dict[str, Any]]]
# A snapshot from a pushed progress (None: the note could not carry it, ask instead).
Apply = Callable[[dict[str, Any] | None], Awaitable[dict[str, Any]]]


class Side(Protocol):
    """Numbers a snapshot adds from a slower source, refreshed by their own task."""

    async def poll(self, main: dict[str, Any]) -> None:
        """Refresh what `merge` adds, for the latest main snapshot."""

    def merge(self, main: dict[str, Any]) -> dict[str, Any]:
        """The snapshot to send: `main` with the latest side numbers that still apply."""


class _Watch:
    def __init__(
        self, fetch: Fetch, side: Side | None, apply: Apply | None, send_gap_s: float
    ) -> None:
        self.fetch = fetch
        self.send_gap_s = send_gap_s
        self.side = side
        self.apply = apply
        self.queues: set[asyncio.Queue[bytes | None]] = set()
        self.main: dict[str, Any] | None = None
        self.last: bytes | None = None  # the latest snapshot sent, as its SSE event
        self.version = -1  # the progress version of the latest snapshot sent
        self.ended = asyncio.Event()  # a final snapshot was sent
        self.task: asyncio.Task[None] | None = None
        self.note: Note | None = None  # the latest pushed note not yet applied
        self.applying: asyncio.Task[None] | None = None
        self.heard_at = -math.inf  # (loop time) the last note heard for this run
        self.sent_at = -math.inf  # (loop time) the last snapshot sent
        self.deferred: asyncio.TimerHandle | None = None  # a send waiting for the gap

    def accept(self, snapshot: dict[str, Any]) -> None:
        """Make `snapshot` the current one unless a newer version was already sent."""
        if self.ended.is_set():
            return
        version = snapshot.get("version")
        final = snapshot.get("status") in FINAL
        if isinstance(version, int) and not final:
            if version < self.version:
                return  # a poll answer overtaken by a pushed note
            self.version = version
        self.main = snapshot
        self.publish(at_once=final)
        if final:
            self.ended.set()

    def publish(self, at_once: bool = False) -> None:
        """Send the current snapshot to every subscriber, if it changed: at once, or,
        within the send gap of the last send, when the gap is over, with whatever else
        changed meanwhile (fewer, fuller snapshots for every watcher to take)."""
        if self.main is None:
            return
        loop = asyncio.get_running_loop()
        wait = self.sent_at + self.send_gap_s - loop.time()
        if at_once or wait <= 0:
            self._send()
        elif self.deferred is None:
            self.deferred = loop.call_later(wait, self._send)

    def _send(self) -> None:
        if self.deferred is not None:
            self.deferred.cancel()
            self.deferred = None
        if self.main is None:
            return
        snapshot = self.side.merge(self.main) if self.side is not None else self.main
        text = json.dumps(snapshot, default=str, sort_keys=True)
        event = f"event: progress\ndata: {text}\n\n".encode()  # once for every watcher
        if event != self.last:
            self.last = event
            self.sent_at = asyncio.get_running_loop().time()
            for queue in self.queues:
                queue.put_nowait(self.last)


class RunEvents:
    """The app's registry of run watches (on app.state, created by the lifespan); with a
    PostgreSQL `feed_url`, also the process's listener of pushed progress notes."""

    def __init__(
        self, tick_s: float = TICK_S, feed_url: str | None = None, send_gap_s: float = SEND_GAP_S
    ) -> None:
        self.tick_s = tick_s
        self.send_gap_s = send_gap_s
        self.feed_url = feed_url
        self._watches: dict[str, _Watch] = {}
        self._listening = threading.Event()  # set: stop listening
        self._listener: threading.Thread | None = None
        self.notes_heard = 0

    async def stream(
        self, run_id: str, fetch: Fetch, side: Side | None = None, apply: Apply | None = None
    ) -> AsyncIterator[bytes]:
        """SSE lines for one subscriber: the current snapshot at once, then each change,
        a comment every KEEPALIVE_S so proxies keep the stream open, and the end."""
        self.start()
        watch = self._watches.get(run_id)
        if watch is None or watch.task is None or watch.task.done():
            watch = self._watches[run_id] = _Watch(fetch, side, apply, self.send_gap_s)
            watch.task = asyncio.create_task(self._poll(run_id, watch))
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        watch.queues.add(queue)
        if watch.last is not None:
            queue.put_nowait(watch.last)
        try:
            while True:
                try:
                    snapshot = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if snapshot is None:
                    return
                yield snapshot
        finally:
            watch.queues.discard(queue)
            if not watch.queues and watch.task is not None:
                watch.task.cancel()

    async def _poll(self, run_id: str, watch: _Watch) -> None:
        side = asyncio.create_task(self._poll_side(run_id, watch)) if watch.side else None
        try:
            while (watch.queues or watch.last is None) and not watch.ended.is_set():
                try:
                    watch.accept(await watch.fetch())
                except Exception as exc:  # Temporal or the database blinked: try again
                    log.warning("run %s: no snapshot this tick (%s)", run_id, exc)
                with suppress(TimeoutError):
                    await asyncio.wait_for(watch.ended.wait(), self._pace(watch))
        finally:
            for task in (side, watch.applying):
                if task is not None:
                    task.cancel()
            if watch.deferred is not None:
                watch.deferred.cancel()
            for queue in watch.queues:
                queue.put_nowait(None)
            if self._watches.get(run_id) is watch:
                del self._watches[run_id]

    def _pace(self, watch: _Watch) -> float:
        """The poll's next wait: a tick, or slower while the run's notes come (they carry
        every change of its progress, and each is shown with the balance read fresh)."""
        fed = asyncio.get_running_loop().time() - watch.heard_at < FED_FOR_S
        return max(self.tick_s, FED_TICK_S) if fed else self.tick_s

    async def _poll_side(self, run_id: str, watch: _Watch) -> None:
        """Refresh the side numbers every tick, from the latest main snapshot."""
        assert watch.side is not None
        while True:
            if watch.main is not None and watch.main.get("status") not in FINAL:
                try:
                    await watch.side.poll(watch.main)
                except Exception as exc:  # a batch that blinked: its numbers wait a tick
                    log.warning("run %s: no side numbers this tick (%s)", run_id, exc)
                else:
                    watch.publish()
            await asyncio.sleep(self.tick_s)

    # ---- pushed notes ----------------------------------------------------------------
    def start(self) -> None:
        """Listen for notes from now on, once (a thread: LISTEN blocks). The lifespan
        calls it, so a note sent before a run's first watcher connects is heard too."""
        if self.feed_url is None or self._listener is not None:
            return
        loop = asyncio.get_running_loop()

        def heard(note: Note) -> None:
            loop.call_soon_threadsafe(self.pushed, note)

        self._listener = threading.Thread(
            target=progress_feed.listen,
            args=(self.feed_url, heard, self._listening),
            name="progress-listener",
            daemon=True,
        )
        self._listener.start()

    def pushed(self, note: Note) -> None:
        """A note for a run (on the event loop): applied at once if the run is watched
        here and the note is newer than what its watchers have seen."""
        self.notes_heard += 1
        watch = self._watches.get(note.key)
        if watch is None or watch.apply is None:
            return
        watch.heard_at = asyncio.get_running_loop().time()
        if note.version <= watch.version:
            return
        if watch.note is None or watch.note.version < note.version:
            watch.note = note
        if watch.applying is None or watch.applying.done():
            watch.applying = asyncio.create_task(self._apply(note.key, watch))

    async def _apply(self, run_id: str, watch: _Watch) -> None:
        """Turn the latest note into a snapshot; notes that came meanwhile are folded
        into the next (only the newest matters)."""
        assert watch.apply is not None
        while watch.note is not None:
            note, watch.note = watch.note, None
            if note.version <= watch.version:
                continue
            try:
                watch.accept(await watch.apply(note.progress))
            except Exception as exc:  # the poll still shows it a tick later
                log.warning("run %s: pushed progress not shown (%s)", run_id, exc)

    async def close(self) -> None:
        self._listening.set()
        for watch in list(self._watches.values()):
            for task in (watch.task, watch.applying):
                if task is not None:
                    task.cancel()
                    with suppress(asyncio.CancelledError, Exception):
                        await task
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 2.0)


def sse_response(
    request: Request, key: str, fetch: Fetch, side: Side | None = None, apply: Apply | None = None
) -> StreamingResponse:
    """The event stream of `key` (a run id, or "batch:<id>") on the app's shared registry,
    which an app whose lifespan did not run (tests on the ASGI transport) gets here."""
    events: RunEvents | None = getattr(request.app.state, "run_events", None)
    if events is None:
        events = request.app.state.run_events = RunEvents()
    return StreamingResponse(
        events.stream(key, fetch, side, apply),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
