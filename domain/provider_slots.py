"""Provider-wide concurrency in the database every worker already shares (DESIGN §4).

A model with `max_concurrency` C has C slot rows. A call leases a free slot before it
reaches the provider and gives it back after; a lease has an expiry that its worker keeps
pushing out while the call runs, so a killed worker's slot frees itself. Nothing here
needs a filesystem shared between workers, and it holds for every batch, run, process
and host together.

A 429's Retry-After is stored per model (`blocked_until`): no caller of that model gets a
slot before it. A paused or cancelled run is written to `igny8_run_stops`, so its calls
still waiting for a slot give up their turn instead of calling the provider.

Every write is one short transaction: a slot is taken with a conditional UPDATE (on
PostgreSQL after `FOR UPDATE SKIP LOCKED`, so takers never queue on each other's rows;
SQLite serialises writers with `BEGIN IMMEDIATE`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from models.db import utcnow
from models.engine import ProviderBackoff, ProviderSlot, RunStop

SLOTS = ProviderSlot.__table__
BACKOFFS = ProviderBackoff.__table__
STOPS = RunStop.__table__


@dataclass(frozen=True)
class Attempt:
    """A taken slot's number, or None with the back-off (if any) that kept it."""

    slot_no: int | None
    blocked_until: datetime | None = None


class SlotPool:
    """The slot rows of every model; thread-safe (each call is its own transaction)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self._pg = engine.dialect.name == "postgresql"
        self._created: set[tuple[str, int]] = set()

    # ---- slots -------------------------------------------------------------------
    def try_acquire(self, model: str, limit: int, holder: str, lease_s: float) -> Attempt:
        """Lease a free slot of `model` to `holder`, or say why not (all busy, backing off).
        A read comes first, so a busy pool costs no write transaction."""
        now = self.clock()
        with self.engine.connect() as conn:
            blocked = self._blocked_until(conn, model, now)
            if blocked is not None:
                return Attempt(None, blocked)
            if (model, limit) in self._created and self._free_slot(conn, model, limit, now) is None:
                return Attempt(None)
        self._ensure_slots(model, limit)
        with self.engine.begin() as conn:
            slot = self._free_slot(conn, model, limit, now, lock=True)
            if slot is None:
                return Attempt(None)
            taken = conn.execute(
                update(SLOTS)
                .where(SLOTS.c.id == slot.id, _free(now))
                .values(holder=holder, lease_until=now + timedelta(seconds=lease_s))
            ).rowcount
        return Attempt(slot.slot_no if taken else None)

    def release(self, model: str, slot_no: int, holder: str) -> bool:
        """Give the slot back; only its holder can (a lease that expired and was taken
        over is not freed by the late holder)."""
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    update(SLOTS)
                    .where(
                        SLOTS.c.model_name == model,
                        SLOTS.c.slot_no == slot_no,
                        SLOTS.c.holder == holder,
                    )
                    .values(holder=None, lease_until=None)
                ).rowcount
            )

    def renew(self, holders: Iterable[str], lease_s: float) -> int:
        """Push out the leases of calls still running (one statement for a whole worker)."""
        held = list(holders)
        if not held:
            return 0
        with self.engine.begin() as conn:
            return conn.execute(
                update(SLOTS)
                .where(SLOTS.c.holder.in_(held))
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

    def _free_slot(
        self, conn: Connection, model: str, limit: int, now: datetime, lock: bool = False
    ) -> object | None:
        stmt = (
            select(SLOTS.c.id, SLOTS.c.slot_no)
            .where(SLOTS.c.model_name == model, SLOTS.c.slot_no < limit, _free(now))
            .order_by(SLOTS.c.slot_no)
            .limit(1)
        )
        if lock and self._pg:
            stmt = stmt.with_for_update(skip_locked=True)
        return conn.execute(stmt).first()

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
