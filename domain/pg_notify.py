"""PostgreSQL LISTEN, shared by what workers and API processes hear from each other
(provider slots freed, a run's progress changed): one connection of its own per
listener, re-opened with back-off when it drops."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import Engine

log = logging.getLogger("igny8.pg_notify")


def postgres_url(engine: Engine) -> str | None:
    """The libpq URL of `engine`'s database, or None when it is not PostgreSQL."""
    if engine.dialect.name != "postgresql":
        return None
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def listen(
    url: str, channel: str, on_payload: Callable[[str], None], stop: threading.Event, what: str
) -> None:
    """Call `on_payload` with every NOTIFY payload on `channel` until `stop` is set
    (blocks, so run it in a thread). A lost connection is re-opened after 1 s, doubling up
    to 30 s; the loss is logged once per outage (`what` says what is not being heard)."""
    pause = 1.0
    while not stop.is_set():
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"LISTEN {channel}")
                pause = 1.0
                while not stop.is_set():
                    for note in conn.notifies(timeout=0.5):
                        try:
                            on_payload(note.payload)
                        except Exception:  # one bad note must not end the listening
                            log.exception("%s: a note could not be handled", what)
        except psycopg.Error as exc:
            if pause == 1.0:
                log.warning("%s lost (%s); reconnecting", what, exc)
            stop.wait(pause)
            pause = min(30.0, pause * 2)
