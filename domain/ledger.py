"""The credit ledger: exact under retries, crashes and concurrency.

Rules (DESIGN §3):
- `Account.credits` is the balance and always equals the sum of the account's
  `CreditTransaction.amount`; `Account.credits_reserved` is the sum of open holds'
  remaining amounts, so available = credits − credits_reserved.
- Every change carries an idempotency key, unique in the ledger. A replay returns the
  first result; a replay with another amount raises `IdempotencyConflict`.
- Balance and available never go below zero: every debit is one conditional UPDATE of
  the account row (`… WHERE credits - n >= credits_reserved - from_hold`), which takes
  the row lock on PostgreSQL; on SQLite every write transaction is `BEGIN IMMEDIATE`
  (models/db.py), so the whole database is the lock.
- A deduction and its `CreditUsageLog` are written in one database transaction.

Lock order (PostgreSQL row locks): a transaction locks the holds it touches first, in id
order, and the account row last; it never locks a hold once it holds the account row.
Two transactions that take locks in one order can wait for each other, never deadlock.
- a deduction's one statement (`PG_DEDUCT`) locks its hold before it updates the
  account; `deduct_many` locks all its holds (`ORDER BY id`) before the first deduction;
- `reserve` locks every expired open hold of the account in one
  `SELECT … ORDER BY id FOR UPDATE`, closes them, and only then updates the account;
- `release` locks its one hold, then updates the account;
- checking that a hold exists and is the account's (`_check_hold`) only reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from core import metrics
from models.accounts import Account
from models.billing import CreditReservation, CreditTransaction, CreditUsageLog
from models.db import UTCDateTime, usd_sum, utcnow

ACCOUNTS = Account.__table__
TXS = CreditTransaction.__table__
USAGE = CreditUsageLog.__table__
HOLDS = CreditReservation.__table__


class LedgerError(Exception):
    """Base of every ledger refusal; the message is meant for users."""


class AccountNotFound(LedgerError):
    def __init__(self, account_id: int) -> None:
        super().__init__(f"Account {account_id} does not exist")
        self.account_id = account_id


class InsufficientCredits(LedgerError):
    def __init__(self, required: int, available: int) -> None:
        super().__init__(f"Insufficient credits. Required: {required}, Available: {available}")
        self.required = required
        self.available = available


class IdempotencyConflict(LedgerError):
    """The key was used before for a different change: a bug in the caller, never retried."""


class HoldNotFound(LedgerError):
    pass


@dataclass(frozen=True)
class Balance:
    credits: int
    reserved: int
    available: int


@dataclass(frozen=True)
class TxResult:
    transaction_id: int
    amount: int
    balance_after: int
    replayed: bool


@dataclass(frozen=True)
class HoldResult:
    hold_id: int
    amount: int
    expires_at: datetime
    replayed: bool


@dataclass(frozen=True)
class DeductionResult:
    transaction_id: int
    usage_log_id: int
    amount: int
    balance_after: int
    replayed: bool


@dataclass(frozen=True)
class ReleaseResult:
    hold_id: int
    account_id: int
    released: int
    consumed: int
    replayed: bool


@dataclass(frozen=True)
class UsageTotals:
    """What an account's usage logs add up to; USD sums are exact Decimals."""

    count: int
    credits: int
    cost_usd: Decimal
    billed_usd: Decimal


@dataclass(frozen=True)
class DeductItem:
    amount: int
    key: str
    usage: Usage
    hold_id: int | None = None
    description: str = ""


@dataclass(frozen=True)
class Usage:
    """What a deduction paid for; becomes its CreditUsageLog row."""

    operation_type: str
    cost_usd: Decimal = Decimal("0")
    billed_usd: Decimal = Decimal("0")
    model_name: str | None = None
    tokens_input: int = 0
    tokens_output: int = 0
    related_object_type: str | None = None
    related_object_id: int | None = None
    ai_task_log_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _positive(amount: int, what: str) -> int:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ValueError(f"{what} must be a positive whole number of credits, got {amount!r}")
    return amount


class Ledger:
    """All balance changes go through here; the API, activities and CLI share it."""

    def __init__(
        self,
        engine: Engine,
        *,
        hold_ttl_seconds: int = 6 * 3600,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.hold_ttl = timedelta(seconds=hold_ttl_seconds)
        self.clock = clock
        self._pg = engine.dialect.name == "postgresql"

    # ---- reads -------------------------------------------------------------------
    def balance(self, account_id: int) -> Balance:
        with self.engine.connect() as conn:
            return self._balance(conn, account_id)

    def _balance(self, conn: Connection, account_id: int) -> Balance:
        row = conn.execute(
            select(ACCOUNTS.c.credits, ACCOUNTS.c.credits_reserved).where(
                ACCOUNTS.c.id == account_id
            )
        ).first()
        if row is None:
            raise AccountNotFound(account_id)
        return Balance(row.credits, row.credits_reserved, row.credits - row.credits_reserved)

    def usage_totals(self, account_id: int, operation_type: str | None = None) -> UsageTotals:
        """Count, credits and USD of the account's usage logs (of one operation type)."""
        stmt = select(
            func.count(),
            func.coalesce(func.sum(USAGE.c.credits_used), 0),
            usd_sum(USAGE.c.cost_usd),
            usd_sum(USAGE.c.billed_usd),
        ).where(USAGE.c.account_id == account_id)
        if operation_type is not None:
            stmt = stmt.where(USAGE.c.operation_type == operation_type)
        with self.engine.connect() as conn:
            count, credits, cost, billed = conn.execute(stmt).one()
        return UsageTotals(count, int(credits), cost, billed)

    # ---- credits in --------------------------------------------------------------
    def top_up(
        self,
        account_id: int,
        amount: int,
        idempotency_key: str,
        *,
        description: str = "Credit purchase",
        transaction_type: str = "purchase",
        details: dict[str, Any] | None = None,
    ) -> TxResult:
        """Add credits once per key (a replayed top-up credits once)."""
        _positive(amount, "A top-up")
        result = self._with_replay(
            lambda conn: self._credit(
                conn, account_id, amount, idempotency_key, description, transaction_type, details
            ),
            lambda conn: self._replay_tx(conn, idempotency_key, account_id, amount),
        )
        _count_added(result, transaction_type)
        return result

    def refund(
        self, account_id: int, amount: int, idempotency_key: str, *, description: str
    ) -> TxResult:
        _positive(amount, "A refund")
        result = self._with_replay(
            lambda conn: self._credit(
                conn, account_id, amount, idempotency_key, description, "refund", None
            ),
            lambda conn: self._replay_tx(conn, idempotency_key, account_id, amount),
        )
        _count_added(result, "refund")
        return result

    def credit_in(
        self,
        conn: Connection,
        account_id: int,
        amount: int,
        idempotency_key: str,
        description: str,
    ) -> TxResult:
        """A purchase inside the caller's transaction (account creation books its opening credits)."""
        _positive(amount, "A top-up")
        result = self._credit(
            conn, account_id, amount, idempotency_key, description, "purchase", None
        )
        _count_added(result, "purchase")  # the caller's transaction commits it
        return result

    def _credit(
        self,
        conn: Connection,
        account_id: int,
        amount: int,
        key: str,
        description: str,
        transaction_type: str,
        details: dict[str, Any] | None,
    ) -> TxResult:
        replay = self._replay_tx(conn, key, account_id, amount)
        if replay is not None:
            return replay
        row = conn.execute(
            update(ACCOUNTS)
            .where(ACCOUNTS.c.id == account_id)
            .values(credits=ACCOUNTS.c.credits + amount)
            .returning(ACCOUNTS.c.credits)
        ).first()
        if row is None:
            raise AccountNotFound(account_id)
        tx_id = self._insert_tx(
            conn,
            account_id,
            amount,
            row.credits,
            transaction_type,
            None,
            key,
            description,
            None,
            details or {},
        )
        return TxResult(tx_id, amount, row.credits, replayed=False)

    # ---- holds -------------------------------------------------------------------
    def reserve(
        self,
        account_id: int,
        amount: int,
        idempotency_key: str,
        *,
        operation_type: str | None = None,
        workflow_id: str | None = None,
        ttl_seconds: int | None = None,
    ) -> HoldResult:
        """Hold `amount` credits, or raise InsufficientCredits with required and available."""
        _positive(amount, "A reservation")
        ttl = timedelta(seconds=ttl_seconds) if ttl_seconds else self.hold_ttl
        expired: list[int] = []  # credits of expired holds this attempt closed

        def attempt(conn: Connection) -> HoldResult:
            expired.clear()
            replay = self._replay_hold(conn, idempotency_key, account_id, amount)
            if replay is not None:
                return replay
            now = self.clock()
            expired.append(self._expire_account_holds(conn, account_id, now))
            row = conn.execute(
                update(ACCOUNTS)
                .where(
                    ACCOUNTS.c.id == account_id,
                    ACCOUNTS.c.credits - ACCOUNTS.c.credits_reserved >= amount,
                )
                .values(credits_reserved=ACCOUNTS.c.credits_reserved + amount)
                .returning(ACCOUNTS.c.id)
            ).first()
            if row is None:
                replay = self._replay_hold(conn, idempotency_key, account_id, amount)
                if replay is not None:  # a concurrent twin of this call got there first
                    return replay
                bal = self._balance(conn, account_id)
                raise InsufficientCredits(amount, bal.available)
            expires = now + ttl
            hold_id = conn.execute(
                insert(HOLDS)
                .values(
                    account_id=account_id,
                    amount=amount,
                    consumed=0,
                    released=0,
                    status="open",
                    operation_type=operation_type,
                    idempotency_key=idempotency_key,
                    workflow_id=workflow_id,
                    expires_at=expires,
                    created_at=now,
                )
                .returning(HOLDS.c.id)
            ).scalar_one()
            return HoldResult(hold_id, amount, expires, replayed=False)

        try:
            result = self._with_replay(
                attempt, lambda conn: self._replay_hold(conn, idempotency_key, account_id, amount)
            )
        except InsufficientCredits:
            metrics.CREDIT_REFUSALS.labels("reserve").inc()
            raise
        if sum(expired):  # committed with the reservation
            metrics.CREDITS_RELEASED.labels("expired").inc(sum(expired))
        if not result.replayed:
            metrics.CREDITS_RESERVED.labels(operation_type or "unknown").inc(amount)
        return result

    def release(self, hold_id: int) -> ReleaseResult:
        """Close the hold and give back every credit it did not consume; idempotent."""
        return self._release_counted(hold_id, "released")

    def _release_counted(self, hold_id: int, reason: str) -> ReleaseResult:
        with self.engine.begin() as conn:
            result = self._release(conn, hold_id)
        if not result.replayed and result.released:  # an open hold has released nothing yet
            metrics.CREDITS_RELEASED.labels(reason).inc(result.released)
        return result

    def _release(self, conn: Connection, hold_id: int) -> ReleaseResult:
        hold = self._lock_hold(conn, hold_id)  # the hold first, then the account row
        if hold is None:
            raise HoldNotFound(f"Credit hold {hold_id} does not exist")
        if hold.status != "open":
            return ReleaseResult(
                hold_id, hold.account_id, hold.released, hold.consumed, replayed=True
            )
        remaining = self._close_hold(conn, hold)
        self._unreserve(conn, hold.account_id, remaining)
        return ReleaseResult(
            hold_id, hold.account_id, hold.released + remaining, hold.consumed, replayed=False
        )

    def _close_hold(self, conn: Connection, hold: Any) -> int:
        """Close a locked open hold; returns the credits it gives back."""
        remaining = hold.amount - hold.consumed - hold.released
        conn.execute(
            update(HOLDS)
            .where(HOLDS.c.id == hold.id)
            .values(status="closed", released=hold.released + remaining, closed_at=self.clock())
        )
        return remaining

    def _unreserve(self, conn: Connection, account_id: int, credits: int) -> None:
        if credits:
            conn.execute(
                update(ACCOUNTS)
                .where(ACCOUNTS.c.id == account_id)
                .values(credits_reserved=ACCOUNTS.c.credits_reserved - credits)
            )

    def extend_hold(self, hold_id: int) -> bool:
        """Push an open hold's expiry to now + TTL (a paused run keeps its credits);
        False if the hold is already closed."""
        with self.engine.begin() as conn:
            hold = self._lock_hold(conn, hold_id)
            if hold is None:
                raise HoldNotFound(f"Credit hold {hold_id} does not exist")
            if hold.status != "open":
                return False
            conn.execute(
                update(HOLDS)
                .where(HOLDS.c.id == hold_id)
                .values(expires_at=max(hold.expires_at, self.clock() + self.hold_ttl))
            )
            return True

    def expire_holds(self, now: datetime | None = None) -> int:
        """Release every open hold past its expiry (a terminated run's credits come back)."""
        now = now or self.clock()
        with self.engine.connect() as conn:
            ids = (
                conn.execute(
                    select(HOLDS.c.id).where(HOLDS.c.status == "open", HOLDS.c.expires_at < now)
                )
                .scalars()
                .all()
            )
        for hold_id in ids:
            self._release_counted(hold_id, "expired")
        return len(ids)

    def _expire_account_holds(self, conn: Connection, account_id: int, now: datetime) -> int:
        """Close the account's expired holds before reserving. All of them are locked in one
        statement, in id order, and their credits go back in one account update after:
        releasing them one by one would lock the second hold while holding the account
        row, and deadlock with a deduction that holds that hold and waits for the row."""
        stmt = (
            select(HOLDS)
            .where(
                HOLDS.c.account_id == account_id,
                HOLDS.c.status == "open",
                HOLDS.c.expires_at < now,
            )
            .order_by(HOLDS.c.id)
        )
        if self._pg:
            stmt = stmt.with_for_update()
        freed = sum(self._close_hold(conn, hold) for hold in conn.execute(stmt).all())
        self._unreserve(conn, account_id, freed)
        return freed

    def _lock_hold(self, conn: Connection, hold_id: int) -> Any:
        stmt = select(HOLDS).where(HOLDS.c.id == hold_id)
        if self._pg:
            stmt = stmt.with_for_update()
        return conn.execute(stmt).first()

    def _lock_holds(self, conn: Connection, hold_ids: set[int]) -> None:
        """Lock several holds in id order, before any account row (PostgreSQL only:
        SQLite's write transaction already holds the whole database)."""
        if self._pg and hold_ids:
            conn.execute(
                select(HOLDS.c.id)
                .where(HOLDS.c.id.in_(sorted(hold_ids)))
                .order_by(HOLDS.c.id)
                .with_for_update()
            )

    # ---- credits out -------------------------------------------------------------
    def deduct(
        self,
        account_id: int,
        amount: int,
        idempotency_key: str,
        usage: Usage,
        *,
        hold_id: int | None = None,
        description: str = "",
    ) -> DeductionResult:
        """Charge `amount` once per key, consuming the hold first; with its usage log."""
        _positive(amount, "A deduction")
        deduct = self._deduct_pg if self._pg else self._deduct
        try:
            result = self._with_replay(
                lambda conn: deduct(
                    conn, account_id, amount, idempotency_key, usage, hold_id, description
                ),
                lambda conn: self._replay_deduction(conn, idempotency_key, account_id, amount),
            )
        except InsufficientCredits:
            metrics.CREDIT_REFUSALS.labels("deduct").inc()
            raise
        _count_deduction(result, usage)
        return result

    def deduct_many(
        self, account_id: int, items: list[DeductItem]
    ) -> list[DeductionResult | LedgerError]:
        """Several deductions in one database transaction, so the account row is locked
        once for all of them; each keeps its own key, ledger entry, usage log and
        balance_after. If any of them is a replay or refused, they run one by one, and
        each refusal is returned in its place instead of failing the others."""
        for item in items:
            _positive(item.amount, "A deduction")
        deduct = self._deduct_pg if self._pg else self._deduct
        if len(items) > 1:
            try:
                with self.engine.begin() as conn:
                    self._lock_holds(conn, {i.hold_id for i in items if i.hold_id is not None})
                    batch = [
                        deduct(conn, account_id, i.amount, i.key, i.usage, i.hold_id, i.description)
                        for i in items
                    ]
            except (IntegrityError, LedgerError):
                pass  # settle them one at a time below
            else:  # committed: count each deduction (the fallback below counts its own)
                for item, result in zip(items, batch, strict=True):
                    _count_deduction(result, item.usage)
                return list(batch)
        results: list[DeductionResult | LedgerError] = []
        for i in items:
            try:
                results.append(
                    self.deduct(
                        account_id,
                        i.amount,
                        i.key,
                        i.usage,
                        hold_id=i.hold_id,
                        description=i.description,
                    )
                )
            except LedgerError as exc:
                results.append(exc)
        return results

    def _deduct_pg(
        self,
        conn: Connection,
        account_id: int,
        amount: int,
        key: str,
        usage: Usage,
        hold_id: int | None,
        description: str,
    ) -> DeductionResult:
        """The whole deduction as one statement (PostgreSQL data-modifying CTEs): consume
        the hold, debit the account conditionally, insert the transaction and its usage
        log. A replay trips the unique key and is answered by `_with_replay`."""
        now = self.clock()
        row = conn.execute(
            PG_DEDUCT,
            {
                "account_id": account_id,
                "amount": amount,
                "hold_id": hold_id,
                "expires_at": now + self.hold_ttl,
                "now": now.replace(tzinfo=None),
                "key": key,
                "description": (description or f"{usage.operation_type}: {amount} credits")[:500],
                "operation_type": usage.operation_type,
                "cost_usd": usage.cost_usd,
                "billed_usd": usage.billed_usd,
                "model_name": usage.model_name,
                "tokens_input": usage.tokens_input,
                "tokens_output": usage.tokens_output,
                "related_object_type": usage.related_object_type,
                "related_object_id": usage.related_object_id,
                "ai_task_log_id": usage.ai_task_log_id,
                "details": json.dumps(usage.details),
            },
        ).first()
        if row is None:
            # Nothing written: a retry of a deduction that already took the last credits
            # is a replay, not a shortfall; only then is it a real refusal.
            replay = self._replay_deduction(conn, key, account_id, amount)
            if replay is not None:
                return replay
            self._check_hold(conn, hold_id, account_id)
            bal = self._balance(conn, account_id)
            raise InsufficientCredits(amount, bal.available)
        if hold_id is not None and row.hold_used is None:
            self._check_hold(conn, hold_id, account_id)  # closed is fine; missing/foreign raise
        return DeductionResult(row.tx_id, row.usage_id, amount, row.balance_after, replayed=False)

    def _check_hold(self, conn: Connection, hold_id: int | None, account_id: int) -> None:
        """Raise unless the hold exists and is the account's. A plain read, no lock: it runs
        after `PG_DEDUCT` updated the account row, and a hold is never locked after that."""
        if hold_id is None:
            return
        hold = conn.execute(select(HOLDS.c.account_id).where(HOLDS.c.id == hold_id)).first()
        if hold is None or hold.account_id != account_id:
            raise HoldNotFound(f"Credit hold {hold_id} does not exist for account {account_id}")

    def _deduct(
        self,
        conn: Connection,
        account_id: int,
        amount: int,
        key: str,
        usage: Usage,
        hold_id: int | None,
        description: str,
    ) -> DeductionResult:
        replay = self._replay_deduction(conn, key, account_id, amount)
        if replay is not None:
            return replay
        from_hold = self._consume_hold(conn, hold_id, account_id, amount)
        row = conn.execute(
            update(ACCOUNTS)
            .where(
                ACCOUNTS.c.id == account_id,
                ACCOUNTS.c.credits - amount >= ACCOUNTS.c.credits_reserved - from_hold,
            )
            .values(
                credits=ACCOUNTS.c.credits - amount,
                credits_reserved=ACCOUNTS.c.credits_reserved - from_hold,
            )
            .returning(ACCOUNTS.c.credits)
        ).first()
        if row is None:
            bal = self._balance(conn, account_id)
            raise InsufficientCredits(amount, bal.available + from_hold)
        tx_id = self._insert_tx(
            conn,
            account_id,
            -amount,
            row.credits,
            "deduction",
            usage.operation_type,
            key,
            description or f"{usage.operation_type}: {amount} credits",
            hold_id,
            {},
        )
        usage_id = conn.execute(
            insert(USAGE)
            .values(
                account_id=account_id,
                transaction_id=tx_id,
                operation_type=usage.operation_type,
                credits_used=amount,
                cost_usd=usage.cost_usd,
                billed_usd=usage.billed_usd,
                model_name=usage.model_name,
                tokens_input=usage.tokens_input,
                tokens_output=usage.tokens_output,
                related_object_type=usage.related_object_type,
                related_object_id=usage.related_object_id,
                ai_task_log_id=usage.ai_task_log_id,
                details=usage.details,
                created_at=self.clock(),
            )
            .returning(USAGE.c.id)
        ).scalar_one()
        return DeductionResult(tx_id, usage_id, amount, row.credits, replayed=False)

    def _consume_hold(
        self, conn: Connection, hold_id: int | None, account_id: int, amount: int
    ) -> int:
        """Take up to `amount` from the hold; returns how much it covered (0 if closed)."""
        if hold_id is None:
            return 0
        hold = self._lock_hold(conn, hold_id)
        if hold is None or hold.account_id != account_id:
            raise HoldNotFound(f"Credit hold {hold_id} does not exist for account {account_id}")
        if hold.status != "open":
            return 0
        covered = min(amount, hold.amount - hold.consumed - hold.released)
        # Each deduction keeps an active run's hold alive past its original expiry.
        conn.execute(
            update(HOLDS)
            .where(HOLDS.c.id == hold_id)
            .values(
                consumed=hold.consumed + covered,
                expires_at=max(hold.expires_at, self.clock() + self.hold_ttl),
            )
        )
        return covered

    # ---- plumbing ----------------------------------------------------------------
    def _insert_tx(
        self,
        conn: Connection,
        account_id: int,
        amount: int,
        balance_after: int,
        transaction_type: str,
        operation_type: str | None,
        key: str,
        description: str,
        hold_id: int | None,
        details: dict[str, Any],
    ) -> int:
        return conn.execute(
            insert(TXS)
            .values(
                account_id=account_id,
                amount=amount,
                balance_after=balance_after,
                transaction_type=transaction_type,
                operation_type=operation_type,
                description=description[:500],
                idempotency_key=key,
                reservation_id=hold_id,
                details=details,
                created_at=self.clock(),
            )
            .returning(TXS.c.id)
        ).scalar_one()

    def _with_replay(
        self, attempt: Callable[[Connection], Any], replay: Callable[[Connection], Any]
    ) -> Any:
        """Run `attempt` in a transaction; if a concurrent twin committed the same key
        first (unique violation), return that twin's result instead."""
        try:
            with self.engine.begin() as conn:
                return attempt(conn)
        except IntegrityError:
            with self.engine.connect() as conn:
                result = replay(conn)
            if result is None:
                raise
            metrics.LEDGER_CONFLICTS.labels("concurrent_replay").inc()
            return result

    def _replay_tx(
        self, conn: Connection, key: str, account_id: int, amount: int
    ) -> TxResult | None:
        row = conn.execute(select(TXS).where(TXS.c.idempotency_key == key)).first()
        if row is None:
            return None
        if row.account_id != account_id or row.amount != amount:
            metrics.LEDGER_CONFLICTS.labels("key_reused").inc()
            raise IdempotencyConflict(
                f"Idempotency key '{key}' was already used for {row.amount} credits "
                f"on account {row.account_id}; refusing {amount} on account {account_id}"
            )
        return TxResult(row.id, row.amount, row.balance_after, replayed=True)

    def _replay_deduction(
        self, conn: Connection, key: str, account_id: int, amount: int
    ) -> DeductionResult | None:
        tx = self._replay_tx(conn, key, account_id, -amount)
        if tx is None:
            return None
        usage_id = conn.execute(
            select(USAGE.c.id).where(USAGE.c.transaction_id == tx.transaction_id)
        ).scalar_one()
        return DeductionResult(tx.transaction_id, usage_id, amount, tx.balance_after, replayed=True)

    def _replay_hold(
        self, conn: Connection, key: str, account_id: int, amount: int
    ) -> HoldResult | None:
        row = conn.execute(select(HOLDS).where(HOLDS.c.idempotency_key == key)).first()
        if row is None:
            return None
        if row.account_id != account_id or row.amount != amount:
            metrics.LEDGER_CONFLICTS.labels("key_reused").inc()
            raise IdempotencyConflict(
                f"Hold key '{key}' was already used for {row.amount} credits; refusing {amount}"
            )
        return HoldResult(row.id, row.amount, row.expires_at, replayed=True)


def _count_added(result: TxResult, transaction_type: str) -> None:
    if not result.replayed:
        metrics.CREDITS_ADDED.labels(transaction_type).inc(result.amount)


def _count_deduction(result: DeductionResult, usage: Usage) -> None:
    """A committed deduction, once: a replay found the first one and adds nothing."""
    if not result.replayed:
        metrics.CREDITS_CHARGED.labels(usage.operation_type).inc(result.amount)
        metrics.DEDUCTIONS.labels(usage.operation_type).inc()


PG_DEDUCT = text(
    """
WITH hold AS (
    SELECT id, LEAST(:amount, amount - consumed - released) AS covered
    FROM igny8_billing_creditreservation
    WHERE id = :hold_id AND account_id = :account_id AND status = 'open'
    FOR UPDATE
), hold_update AS (
    UPDATE igny8_billing_creditreservation r
    SET consumed = r.consumed + hold.covered, expires_at = GREATEST(r.expires_at, :expires_at)
    FROM hold WHERE r.id = hold.id
    RETURNING hold.covered
), acct AS (
    UPDATE igny8_accounts
    SET credits = credits - :amount,
        credits_reserved = credits_reserved - COALESCE((SELECT covered FROM hold), 0)
    WHERE id = :account_id
      AND credits - :amount >= credits_reserved - COALESCE((SELECT covered FROM hold), 0)
    RETURNING credits
), tx AS (
    INSERT INTO igny8_billing_credittransaction
        (account_id, amount, balance_after, transaction_type, operation_type, description,
         idempotency_key, reservation_id, details, created_at)
    SELECT :account_id, -:amount, acct.credits, 'deduction', :operation_type, :description,
           :key, (SELECT id FROM hold), '{}', :now
    FROM acct
    RETURNING id, balance_after
)
INSERT INTO igny8_billing_creditusagelog
    (account_id, transaction_id, operation_type, credits_used, cost_usd, billed_usd,
     model_name, tokens_input, tokens_output, related_object_type, related_object_id,
     ai_task_log_id, details, created_at)
SELECT :account_id, tx.id, :operation_type, :amount, :cost_usd, :billed_usd, :model_name,
       :tokens_input, :tokens_output, :related_object_type, :related_object_id,
       :ai_task_log_id, CAST(:details AS JSON), :now
FROM tx
RETURNING transaction_id AS tx_id, id AS usage_id,
          (SELECT balance_after FROM tx) AS balance_after,
          (SELECT id FROM hold) AS hold_used
"""
).bindparams(
    bindparam("hold_id", type_=Integer),
    bindparam("expires_at", type_=UTCDateTime),
    bindparam("related_object_id", type_=Integer),
    bindparam("ai_task_log_id", type_=Integer),
    bindparam("model_name", type_=String),
    bindparam("related_object_type", type_=String),
)
