"""A run's progress pushed to every API process the moment a workflow changes it.

Without it an SSE watcher waits for the API's next poll and for that poll's Temporal
query, which waits behind the workflow's tasks on a busy worker: bench/watchers.py
measured change -> watcher p50 235-250 / p99 561-692 ms that way (two runs). With it the worker that
made the change sends the new progress over PostgreSQL NOTIFY and each API process hears
it at once; the poll stays, for the ledger balance and as the fallback when a note is
lost, on SQLite (no NOTIFY: the embedded stack polls only) or when no feed is installed.

The workflow announces a change from its own task, only when not replaying (as its
logger does): an announcement is telemetry, never a command, so histories replay the
same with or without a feed. It is sent before the task that made the change completes;
a task that fails is retried and makes the same change again, so a watcher may at worst
see a change a moment early. Each note carries the progress's version (how many changes
the run has had), so a listener drops what is older than what it already showed.

`announce` only drops the progress in a dict (a newer version of a run replaces one not
yet sent); a thread of its own serialises and sends, on one connection of its own.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from pydantic import BaseModel

from domain import pg_notify

log = logging.getLogger("igny8.progress_feed")

CHANNEL = "igny8_progress"
MAX_PAYLOAD = 7900  # PostgreSQL refuses a NOTIFY payload of 8000 bytes or more


@dataclass(frozen=True)
class Note:
    """One announcement: the run (`key`), its progress's version, and the progress (None
    when it was too large to carry: the listener asks the workflow instead)."""

    key: str
    version: int
    progress: dict[str, Any] | None


class Feed(Protocol):
    def announce(self, key: str, version: int, progress: BaseModel) -> None:
        """Send `progress`, version `version` of run `key`, soon; never block."""


_installed: Feed | None = None


def install(feed: Feed | None) -> None:
    """The feed this process's workflows announce to (None: none, announcing is a no-op)."""
    global _installed
    _installed = feed


def announce(key: str, version: int, progress: BaseModel) -> None:
    """Called by a workflow (outside replay) when its progress changed."""
    if _installed is not None:
        _installed.announce(key, version, progress)


def encode(key: str, version: int, progress: BaseModel) -> str:
    """A note's payload: the progress as JSON, left out if it would be too large."""
    body = {"key": key, "version": version, "progress": progress.model_dump(mode="json")}
    text = json.dumps(body, separators=(",", ":"))
    if len(text.encode()) <= MAX_PAYLOAD:
        return text
    return json.dumps({"key": key, "version": version, "progress": None})


def decode(payload: str) -> Note | None:
    """A note from its payload; None for one this code cannot read (logged, skipped)."""
    try:
        body = json.loads(payload)
        return Note(str(body["key"]), int(body["version"]), body.get("progress"))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable progress note skipped (%s)", exc)
        return None


class PgFeed:
    """Announcements sent by NOTIFY from a thread of its own; `start` it, then `close`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._latest: dict[str, tuple[int, BaseModel]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-feed", daemon=True)
        self.sent = 0

    def start(self) -> PgFeed:
        self._thread.start()
        return self

    def announce(self, key: str, version: int, progress: BaseModel) -> None:
        with self._lock:
            self._keep(key, version, progress)
        self._wake.set()

    def _keep(self, key: str, version: int, progress: BaseModel) -> None:
        """Hold `progress` to send unless a newer version of the run is held (locked)."""
        held = self._latest.get(key)
        if held is None or held[0] < version:
            self._latest[key] = (version, progress)

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is waiting (one try), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _take(self) -> dict[str, tuple[int, BaseModel]]:
        with self._lock:
            taken, self._latest = self._latest, {}
        return taken

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        failing = False
        while True:
            self._wake.wait(1.0)
            self._wake.clear()
            notes = self._take()
            try:
                if notes:
                    conn = conn if conn is not None and not conn.closed else self._connect()
                    for key, (version, progress) in notes.items():
                        conn.execute(
                            "SELECT pg_notify(%s, %s)", (CHANNEL, encode(key, version, progress))
                        )
                        self.sent += 1
                    failing = False
            except Exception as exc:  # the sender must outlive any one note or outage
                # the notes wait for the next try (unless a newer version came meanwhile);
                # the API's poll still shows the progress meanwhile
                if not failing:
                    log.warning("progress notes not sent (%s); trying again", exc)
                failing = True
                self._put_back(notes)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(1.0)
            if self._stop.is_set() and (failing or not self._latest):
                break
        if conn is not None:
            conn.close()

    def _put_back(self, notes: dict[str, tuple[int, BaseModel]]) -> None:
        with self._lock:
            for key, (version, progress) in notes.items():
                self._keep(key, version, progress)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True)


def listen(url: str, on_note: Callable[[Note], None], stop: threading.Event) -> None:
    """Call `on_note` for every progress note any worker sends, until `stop` is set
    (blocks, so run it in a thread); meanwhile the API's poll still shows progress."""

    def heard(payload: str) -> None:
        note = decode(payload)
        if note is not None:
            on_note(note)

    pg_notify.listen(url, CHANNEL, heard, stop, "progress notes")
