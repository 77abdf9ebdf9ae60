"""Provider-wide concurrency in the database every worker already shares (DESIGN §4).

A model with `max_concurrency` C has C slot rows. A worker process leases free slots (its
holder token on the row) before its calls reach the provider and gives them back after;
a lease has an expiry that the worker keeps pushing out while it holds the slot, so a
killed worker's slots free themselves. Nothing here
needs a filesystem shared between workers, and it holds for every batch, run, process
and host together.

A 429's Retry-After is stored per model (`blocked_until`): no caller of that model gets a
slot before it. A paused or cancelled run is written to `igny8_run_stops`, so its calls
still waiting for a slot give up their turn instead of calling the provider.

Every write is one short transaction: slots are taken with one conditional UPDATE … IN
(free slots) RETURNING (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so takers never queue on
each other's rows; SQLite serialises writers with `BEGIN IMMEDIATE`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, Select, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from domain.pg_notify import listen, postgres_url
from models.db import utcnow
from models.engine import ProviderBackoff, ProviderSlot, RunStop

CHANNEL = "igny8_provider_slots"
SLOTS = ProviderSlot.__table__
BACKOFFS = ProviderBackoff.__table__
STOPS = RunStop.__table__


@dataclass(frozen=True)
class Attempt:
    """The slots taken (maybe none), and the back-off that kept them, if any."""

    slots: list[int]
    blocked_until: datetime | None = None


class SlotPool:
    """The slot rows of every model; thread-safe (each call is its own transaction)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self._pg = engine.dialect.name == "postgresql"
        self._created: set[tuple[str, int]] = set()

    # ---- slots -------------------------------------------------------------------
    def try_acquire(
        self, model: str, limit: int, holder: str, lease_s: float, want: int = 1
    ) -> Attempt:
        """Lease up to `want` free slots of `model` to `holder` in one statement, or say why
        none (all busy, backing off). A read comes first, so a busy pool costs no write."""
        now = self.clock()
        with self.engine.connect() as conn:
            blocked = self._blocked_until(conn, model, now)
            if blocked is not None:
                return Attempt([], blocked)
            if (model, limit) in self._created and not self._free_slots(conn, model, limit, now, 1):
                return Attempt([])
        self._ensure_slots(model, limit)
        free = self._free_slots_query(model, limit, now, want)
        if self._pg:
            free = free.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(SLOTS)
                .where(SLOTS.c.id.in_(free.scalar_subquery()), _free(now))
                .values(holder=holder, lease_until=now + timedelta(seconds=lease_s))
                .returning(SLOTS.c.slot_no)
            ).scalars()
            return Attempt(sorted(taken))

    def release(self, model: str, slot_nos: Iterable[int], holder: str) -> int:
        """Give slots back; only their holder can (a lease that expired and was taken over
        is not freed by the late holder). On PostgreSQL every listening worker hears of it
        at once (NOTIFY is sent on commit)."""
        slots = list(slot_nos)
        if not slots:
            return 0
        with self.engine.begin() as conn:
            freed = conn.execute(
                update(SLOTS)
                .where(
                    SLOTS.c.model_name == model,
                    SLOTS.c.slot_no.in_(slots),
                    SLOTS.c.holder == holder,
                )
                .values(holder=None, lease_until=None)
            ).rowcount
            if freed and self._pg:
                conn.execute(
                    text("SELECT pg_notify(:channel, :model)"), {"channel": CHANNEL, "model": model}
                )
            return freed

    def listen(self, on_release: Callable[[str], None], stop: threading.Event) -> None:
        """Call `on_release(model)` whenever any worker frees a slot, until `stop` is set
        (PostgreSQL LISTEN on a connection of its own; blocks, so run it in a thread).
        Elsewhere (SQLite: one host) waiters poll."""
        url = postgres_url(self.engine)
        if url is None:
            return
        # waiters still poll while the connection is down
        listen(url, CHANNEL, on_release, stop, "provider slot notifications")

    def renew(self, model: str, slot_nos: Iterable[int], holder: str, lease_s: float) -> int:
        """Push out the leases of the slots `holder` (a worker process) still holds: one
        statement, however many calls it has running."""
        slots = list(slot_nos)
        if not slots:
            return 0
        with self.engine.begin() as conn:
            return conn.execute(
                update(SLOTS)
                .where(
                    SLOTS.c.model_name == model,
                    SLOTS.c.slot_no.in_(slots),
                    SLOTS.c.holder == holder,
                )
                .values(lease_until=self.clock() + timedelta(seconds=lease_s))
            ).rowcount

    def in_use(self, model: str) -> int:
        now = self.clock()
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).where(
                    SLOTS.c.model_name == model,
                    SLOTS.c.holder.is_not(None),
                    SLOTS.c.lease_until >= now,
                )
            ).scalar_one()

    def _free_slots_query(self, model: str, limit: int, now: datetime, want: int) -> Select:
        return (
            select(SLOTS.c.id)
            .where(SLOTS.c.model_name == model, SLOTS.c.slot_no < limit, _free(now))
            .order_by(SLOTS.c.slot_no)
            .limit(want)
        )

    def _free_slots(
        self, conn: Connection, model: str, limit: int, now: datetime, want: int
    ) -> list[int]:
        return list(conn.execute(self._free_slots_query(model, limit, now, want)).scalars())

    def _ensure_slots(self, model: str, limit: int) -> None:
        """Create the model's slot rows up to `limit` once per process (idempotent)."""
        if (model, limit) in self._created:
            return
        rows = [{"model_name": model, "slot_no": n} for n in range(limit)]
        dialect = postgresql if self._pg else sqlite
        with self.engine.begin() as conn:
            conn.execute(dialect.insert(SLOTS).values(rows).on_conflict_do_nothing())
        self._created.add((model, limit))

    # ---- back-off ----------------------------------------------------------------
    def back_off(self, model: str, seconds: float) -> datetime:
        """Nobody calls `model` for `seconds` (a 429's Retry-After); never shortens one."""
        until = self.clock() + timedelta(seconds=seconds)
        dialect = postgresql if self._pg else sqlite
        stmt = dialect.insert(BACKOFFS).values(model_name=model, blocked_until=until)
        stmt = stmt.on_conflict_do_update(
            index_elements=["model_name"],
            set_={"blocked_until": until},
            where=or_(BACKOFFS.c.blocked_until.is_(None), BACKOFFS.c.blocked_until < until),
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)
        return until

    def blocked_until(self, model: str) -> datetime | None:
        """The end of the model's back-off, if one is running."""
        with self.engine.connect() as conn:
            return self._blocked_until(conn, model, self.clock())

    def _blocked_until(self, conn: Connection, model: str, now: datetime) -> datetime | None:
        until = conn.execute(
            select(BACKOFFS.c.blocked_until).where(BACKOFFS.c.model_name == model)
        ).scalar_one_or_none()
        return until if until is not None and until > now else None

    # ---- stopped runs ------------------------------------------------------------
    def set_stopped(self, workflow_id: str, stopped: bool) -> None:
        """Record that a run paused or was cancelled (True) or resumed (False)."""
        dialect = postgresql if self._pg else sqlite
        now = self.clock()
        stmt = dialect.insert(STOPS).values(
            workflow_id=workflow_id, stopped=stopped, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["workflow_id"], set_={"stopped": stopped, "updated_at": now}
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def stopped(self, workflow_ids: Iterable[str]) -> set[str]:
        ids = list(set(workflow_ids))
        if not ids:
            return set()
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    select(STOPS.c.workflow_id).where(
                        STOPS.c.workflow_id.in_(ids), STOPS.c.stopped.is_(True)
                    )
                ).scalars()
            )

    def forget(self, workflow_id: str) -> None:
        """A finished run's stop row is no longer needed."""
        with self.engine.begin() as conn:
            conn.execute(delete(STOPS).where(STOPS.c.workflow_id == workflow_id))


def _free(now: datetime) -> object:
    return or_(SLOTS.c.holder.is_(None), SLOTS.c.lease_until < now)
