"""Check every ledger invariant of DESIGN §3 and list each breach.

Used by `igny8 reconcile` (exit 1 on any breach) and by tests after every money scenario.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, func, select

from models.accounts import Account
from models.billing import CreditReservation, CreditTransaction, CreditUsageLog
from models.db import utcnow
from models.logs import AITaskLog, Notification

ACCOUNTS = Account.__table__
TXS = CreditTransaction.__table__
USAGE = CreditUsageLog.__table__
HOLDS = CreditReservation.__table__
TASKS = AITaskLog.__table__
NOTES = Notification.__table__

HOLD_SWEEP_INTERVAL = timedelta(seconds=300)
"""How often the hold sweeper releases expired holds: `SweeperInput.interval_seconds` in
workflows/hold_sweeper.py (a test keeps the two equal; the domain does not import
workflows)."""

EXPIRED_HOLD_GRACE = 2 * HOLD_SWEEP_INTERVAL
"""How long a hold may stay open past its expiry before it is a breach. Nothing releases
a hold at the instant it expires: a terminated run's hold waits for the sweeper's next
pass, up to one interval away, and that pass itself takes time (and retries). A hold
still open after two intervals has outlived a whole sweep that should have closed it:
the sweeper is not running, or cannot release it — that is what reconcile reports."""


@dataclass(frozen=True)
class Breach:
    check: str
    account_id: int | None
    detail: str


def reconcile(
    engine: Engine, now: datetime | None = None, *, hold_grace: timedelta = EXPIRED_HOLD_GRACE
) -> list[Breach]:
    """Every invariant breach in the database; an empty list means the books balance.

    An open hold counts as past its expiry only `hold_grace` after it (EXPIRED_HOLD_GRACE:
    the sweeper's interval and then some), so a check between an expiry and the sweeper's
    next pass reports no false breach."""
    now = now or utcnow()
    with engine.connect() as conn:
        return [
            *_balances(conn),
            *_deductions_have_usage(conn),
            *_usage_points_at_deductions(conn),
            *_expired_holds(conn, now, hold_grace),
            *_hold_sanity(conn),
            *_done_task_logs(conn),
        ]


def _balances(conn: Connection) -> list[Breach]:
    tx_sum = (
        select(TXS.c.account_id, func.sum(TXS.c.amount).label("total"))
        .group_by(TXS.c.account_id)
        .subquery()
    )
    hold_sum = (
        select(
            HOLDS.c.account_id,
            func.sum(HOLDS.c.amount - HOLDS.c.consumed - HOLDS.c.released).label("held"),
        )
        .where(HOLDS.c.status == "open")
        .group_by(HOLDS.c.account_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            ACCOUNTS.c.id,
            ACCOUNTS.c.credits,
            ACCOUNTS.c.credits_reserved,
            func.coalesce(tx_sum.c.total, 0).label("total"),
            func.coalesce(hold_sum.c.held, 0).label("held"),
        )
        .outerjoin(tx_sum, tx_sum.c.account_id == ACCOUNTS.c.id)
        .outerjoin(hold_sum, hold_sum.c.account_id == ACCOUNTS.c.id)
    ).all()
    breaches: list[Breach] = []
    for r in rows:
        if r.credits != r.total:
            breaches.append(
                Breach("balance", r.id, f"balance {r.credits} != sum of transactions {r.total}")
            )
        if r.credits < 0:
            breaches.append(Breach("negative_balance", r.id, f"balance is {r.credits}"))
        if r.credits - r.credits_reserved < 0:
            breaches.append(
                Breach(
                    "negative_available",
                    r.id,
                    f"available is {r.credits - r.credits_reserved} "
                    f"(balance {r.credits}, reserved {r.credits_reserved})",
                )
            )
        if r.credits_reserved != r.held:
            breaches.append(
                Breach(
                    "reserved",
                    r.id,
                    f"reserved {r.credits_reserved} != open holds' remaining {r.held}",
                )
            )
    return breaches


def _deductions_have_usage(conn: Connection) -> list[Breach]:
    usage = (
        select(
            USAGE.c.transaction_id,
            func.count().label("n"),
            func.sum(USAGE.c.credits_used).label("credits"),
        )
        .group_by(USAGE.c.transaction_id)
        .subquery()
    )
    rows = conn.execute(
        select(TXS.c.id, TXS.c.account_id, TXS.c.amount, usage.c.n, usage.c.credits)
        .outerjoin(usage, usage.c.transaction_id == TXS.c.id)
        .where(TXS.c.transaction_type == "deduction")
    ).all()
    breaches = []
    for r in rows:
        if r.n != 1 or r.credits != -r.amount:
            breaches.append(
                Breach(
                    "deduction_usage",
                    r.account_id,
                    f"deduction {r.id} of {-r.amount} credits has {r.n or 0} usage logs "
                    f"totalling {r.credits or 0} credits",
                )
            )
    return breaches


def _usage_points_at_deductions(conn: Connection) -> list[Breach]:
    rows = conn.execute(
        select(
            USAGE.c.id,
            USAGE.c.account_id,
            TXS.c.transaction_type,
            TXS.c.account_id.label("tx_account"),
        )
        .join(TXS, TXS.c.id == USAGE.c.transaction_id)
        .where((TXS.c.transaction_type != "deduction") | (TXS.c.account_id != USAGE.c.account_id))
    ).all()
    return [
        Breach(
            "usage_transaction",
            r.account_id,
            f"usage log {r.id} points at a {r.transaction_type} of account {r.tx_account}",
        )
        for r in rows
    ]


def _hold_sanity(conn: Connection) -> list[Breach]:
    """Each hold: consumed + released never above the amount; a closed hold is settled."""
    settled = HOLDS.c.consumed + HOLDS.c.released
    rows = conn.execute(
        select(
            HOLDS.c.id,
            HOLDS.c.account_id,
            HOLDS.c.amount,
            HOLDS.c.status,
            settled.label("settled"),
        ).where(
            (settled > HOLDS.c.amount)
            | ((HOLDS.c.status != "open") & (settled != HOLDS.c.amount))
            | (HOLDS.c.consumed < 0)
            | (HOLDS.c.released < 0)
        )
    ).all()
    return [
        Breach(
            "hold",
            r.account_id,
            f"hold {r.id} ({r.status}) of {r.amount} has consumed + released = {r.settled}",
        )
        for r in rows
    ]


def _expired_holds(conn: Connection, now: datetime, grace: timedelta) -> list[Breach]:
    rows = conn.execute(
        select(HOLDS.c.id, HOLDS.c.account_id, HOLDS.c.expires_at).where(
            HOLDS.c.status == "open", HOLDS.c.expires_at < now - grace
        )
    ).all()
    return [
        Breach(
            "expired_hold",
            r.account_id,
            f"hold {r.id} open past its expiry {r.expires_at} by more than {grace} "
            "(the hold sweeper should have released it)",
        )
        for r in rows
    ]


def _done_task_logs(conn: Connection) -> list[Breach]:
    usage = (
        select(USAGE.c.ai_task_log_id, func.sum(USAGE.c.credits_used).label("credits"))
        .group_by(USAGE.c.ai_task_log_id)
        .subquery()
    )
    notes = (  # the final notification of a successful run is a *_success one
        select(NOTES.c.ai_task_log_id, func.count().label("n"))
        .where(NOTES.c.notification_type.endswith("_success", autoescape=True))
        .group_by(NOTES.c.ai_task_log_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            TASKS.c.id,
            TASKS.c.account_id,
            TASKS.c.credits_used,
            func.coalesce(usage.c.credits, 0).label("logged"),
            func.coalesce(notes.c.n, 0).label("notes"),
        )
        .outerjoin(usage, usage.c.ai_task_log_id == TASKS.c.id)
        .outerjoin(notes, notes.c.ai_task_log_id == TASKS.c.id)
        .where(and_(TASKS.c.phase == "DONE", TASKS.c.status == "success"))
    ).all()
    breaches = []
    for r in rows:
        if r.logged != r.credits_used:
            breaches.append(
                Breach(
                    "task_log_usage",
                    r.account_id,
                    f"AI task log {r.id} says {r.credits_used} credits, usage logs say {r.logged}",
                )
            )
        if r.notes < 1:
            breaches.append(
                Breach(
                    "task_log_notification",
                    r.account_id,
                    f"AI task log {r.id} has no success notification",
                )
            )
    return breaches
