"""Pushed progress (domain/progress_feed.py): notes sent by NOTIFY from a thread of their
own, a newer version of a run replacing one not yet sent, heard by a LISTEN thread, on a
real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from domain import progress_feed
from domain.progress_feed import MAX_PAYLOAD, Note, PgFeed, decode, encode, listen
from workflows.automation_run import RunProgress, StageProgress


def progress(run_id: str = "automation-1-1-x", done: int = 0, stages: int = 1) -> RunProgress:
    return RunProgress(
        run_id=run_id,
        site_id=1,
        status="running",
        pause_reason=None,
        current_stage="clustering",
        stages=[
            StageProgress(
                name=f"stage-{n}", status="running", total=9, done=done, failed=0, credits_used=0
            )
            for n in range(stages)
        ],
        credits_used=3,
        cost_usd="0.0123",
        balance=97,
        budget_credits=None,
    )


def test_a_note_carries_the_progress_and_reads_back_as_the_model():
    note = decode(encode("run-1", 7, progress(done=4)))
    assert note is not None and (note.key, note.version) == ("run-1", 7)
    assert note.progress is not None
    assert RunProgress.model_validate(note.progress) == progress(done=4)


def test_a_progress_too_large_for_notify_is_left_out_and_the_listener_asks_instead():
    big = progress(stages=200)
    assert len(big.model_dump_json()) > MAX_PAYLOAD
    payload = encode("run-1", 3, big)
    assert len(payload.encode()) < MAX_PAYLOAD
    assert decode(payload) == Note("run-1", 3, None)


@pytest.mark.parametrize("payload", ["", "{", '{"key": "a"}', '{"key": "a", "version": "x"}'])
def test_an_unreadable_note_is_skipped(payload: str):
    assert decode(payload) is None


def test_announcing_without_a_feed_does_nothing_and_with_one_reaches_it():
    heard: list[tuple[str, int]] = []

    class Recorder:
        def announce(self, key: str, version: int, p: RunProgress) -> None:
            heard.append((key, version))

    progress_feed.announce("run-1", 1, progress())  # none installed: no error, nothing
    progress_feed.install(Recorder())
    try:
        progress_feed.announce("run-1", 2, progress())
    finally:
        progress_feed.install(None)
    progress_feed.announce("run-1", 3, progress())
    assert heard == [("run-1", 2)]


@pytest.fixture
def listening(pg_url: str | None) -> Iterator[tuple[str, list[Note]]]:
    """A LISTEN thread on the test database (listening already) and the notes it hears."""
    if pg_url is None:
        pytest.skip("PostgreSQL unreachable")
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    notes: list[Note] = []
    stop = threading.Event()
    thread = threading.Thread(target=listen, args=(url, notes.append, stop), daemon=True)
    thread.start()
    # LISTEN takes effect once its connection is up: a probe note says when
    probe = PgFeed(url).start()
    deadline = time.monotonic() + 10
    while not notes and time.monotonic() < deadline:
        probe.announce("probe", 1, progress())
        time.sleep(0.05)
    probe.close()
    assert notes, "the listener never heard the probe"
    notes.clear()
    yield url, notes
    stop.set()
    thread.join(5)


def wait_for(cond, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_notes_reach_a_listener_and_a_newer_version_replaces_one_not_yet_sent(listening):
    url, notes = listening
    feed = PgFeed(url)  # not started: nothing is sent yet, so the versions pile up
    for version in (1, 2, 3):
        feed.announce("run-a", version, progress("run-a", done=version))
    feed.announce("run-a", 2, progress("run-a", done=2))  # late and older: kept out
    feed.announce("run-b", 1, progress("run-b"))
    feed.start()
    wait_for(lambda: len(notes) >= 2)
    time.sleep(0.2)  # anything more would have come by now
    feed.close()
    by_run = {note.key: note for note in notes if note.key != "probe"}
    assert len([n for n in notes if n.key != "probe"]) == 2, notes  # one note per run
    assert by_run["run-a"].version == 3
    assert RunProgress.model_validate(by_run["run-a"].progress).stages[0].done == 3
    assert by_run["run-b"].version == 1
    # and later announcements are sent as they come
    feed = PgFeed(url).start()
    feed.announce("run-a", 4, progress("run-a", done=4))
    wait_for(lambda: any(n.key == "run-a" and n.version == 4 for n in notes))
    feed.close()
    assert feed.sent == 1


def test_a_feed_whose_database_is_gone_loses_notes_without_raising():
    feed = PgFeed("postgresql://postgres@127.0.0.1:1/nowhere").start()
    feed.announce("run-a", 1, progress("run-a"))
    time.sleep(0.3)
    feed.announce("run-a", 2, progress("run-a"))  # announcing never blocks nor raises
    feed.close()
    assert feed.sent == 0


def test_notes_that_could_not_be_sent_are_sent_on_the_next_try(listening):
    url, notes = listening

    class FlakyFeed(PgFeed):
        """Its first connection fails, as one to a restarting server does."""

        tries = 0

        def _connect(self):
            self.tries += 1
            if self.tries == 1:
                raise psycopg.OperationalError("the server is restarting")
            return super()._connect()

    feed = FlakyFeed(url).start()
    feed.announce("run-r", 1, progress("run-r", done=1))
    wait_for(lambda: any(n.key == "run-r" for n in notes))
    feed.close()
    assert feed.tries == 2 and feed.sent == 1
    assert [n.version for n in notes if n.key == "run-r"] == [1]
