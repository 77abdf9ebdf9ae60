"""The credit ledger on SQLite and PostgreSQL: exact under replays and concurrency."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from threading import Event
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlmodel import Session

from domain.ledger import (
    Balance,
    DeductItem,
    IdempotencyConflict,
    InsufficientCredits,
    Ledger,
    Usage,
)
from domain.reconcile import EXPIRED_HOLD_GRACE, HOLD_SWEEP_INTERVAL, reconcile
from models import Account, CreditReservation, CreditTransaction, CreditUsageLog
from models.db import WriteInReadTransaction, utcnow
from tests import builders
from workflows.hold_sweeper import SweeperInput

USAGE = Usage(operation_type="image_generation", model_name="m")
ACCOUNTS = Account.__table__
HOLDS = CreditReservation.__table__


def _count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_replayed_deduction_changes_nothing_and_returns_first_result(engine):
    acct, _ = builders.account(engine, credits=50)
    ledger = Ledger(engine)
    first = ledger.deduct(acct, 7, "wf-1:image:1", USAGE)
    again = ledger.deduct(acct, 7, "wf-1:image:1", USAGE)
    assert not first.replayed and again.replayed
    assert (again.transaction_id, again.usage_log_id, again.balance_after) == (
        first.transaction_id,
        first.usage_log_id,
        43,
    )
    assert ledger.balance(acct).credits == 43
    assert _count(engine, CreditTransaction.__table__) == 2  # opening purchase + one deduction
    assert _count(engine, CreditUsageLog.__table__) == 1
    assert reconcile(engine) == []


def test_same_key_with_another_amount_is_rejected(engine):
    acct, _ = builders.account(engine, credits=50)
    ledger = Ledger(engine)
    ledger.deduct(acct, 7, "wf-1:image:1", USAGE)
    with pytest.raises(IdempotencyConflict, match="already used for -7"):
        ledger.deduct(acct, 8, "wf-1:image:1", USAGE)
    assert ledger.balance(acct).credits == 43


def test_replayed_top_up_credits_once(engine):
    acct, _ = builders.account(engine, credits=0)
    ledger = Ledger(engine)
    results = [ledger.top_up(acct, 100, "stripe:pi_123") for _ in range(3)]
    assert [r.replayed for r in results] == [False, True, True]
    assert ledger.balance(acct).credits == 100
    with pytest.raises(IdempotencyConflict):
        ledger.top_up(acct, 200, "stripe:pi_123")
    assert reconcile(engine) == []


def test_concurrent_replays_of_one_key_charge_once(engine):
    acct, _ = builders.account(engine, credits=100)
    ledger = Ledger(engine)
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: ledger.deduct(acct, 5, "same-key", USAGE), range(20)))
    assert sum(not r.replayed for r in results) == 1
    assert len({r.transaction_id for r in results}) == 1
    assert ledger.balance(acct).credits == 95
    assert reconcile(engine) == []


def test_fifty_concurrent_reserve_and_deduct_on_ten_credits(engine):
    acct, _ = builders.account(engine, credits=10)
    ledger = Ledger(engine)

    def spend(i: int) -> str:
        try:
            hold = ledger.reserve(acct, 1, f"hold-{i}", workflow_id=f"wf-{i}")
        except InsufficientCredits:
            return "refused"
        ledger.deduct(acct, 1, f"wf-{i}:item", USAGE, hold_id=hold.hold_id)
        ledger.release(hold.hold_id)
        return "ok"

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(spend, range(50)))
    assert outcomes.count("ok") == 10
    assert outcomes.count("refused") == 40
    bal = ledger.balance(acct)
    assert (bal.credits, bal.reserved, bal.available) == (0, 0, 0)
    assert reconcile(engine) == []


def test_deduction_beyond_available_is_refused_with_numbers(engine):
    acct, _ = builders.account(engine, credits=10)
    ledger = Ledger(engine)
    ledger.reserve(acct, 8, "other-run")
    with pytest.raises(InsufficientCredits, match="Required: 5, Available: 2"):
        ledger.deduct(acct, 5, "k", USAGE)
    assert ledger.balance(acct).credits == 10


def test_reserve_refused_names_required_and_available(engine):
    acct, _ = builders.account(engine, credits=3)
    with pytest.raises(InsufficientCredits) as err:
        Ledger(engine).reserve(acct, 4, "h")
    assert str(err.value) == "Insufficient credits. Required: 4, Available: 3"
    assert _count(engine, CreditReservation.__table__) == 0


def test_release_after_partial_use_returns_every_unused_credit(engine):
    acct, _ = builders.account(engine, credits=100)
    ledger = Ledger(engine)
    hold = ledger.reserve(acct, 30, "batch-1:hold")
    assert ledger.balance(acct).available == 70
    ledger.deduct(acct, 4, "batch-1:image:1", USAGE, hold_id=hold.hold_id)
    ledger.deduct(acct, 4, "batch-1:image:2", USAGE, hold_id=hold.hold_id)
    assert ledger.balance(acct).available == 70  # spending a hold does not change available
    released = ledger.release(hold.hold_id)
    assert (released.consumed, released.released) == (8, 22)
    assert ledger.release(hold.hold_id).replayed  # idempotent
    bal = ledger.balance(acct)
    assert (bal.credits, bal.reserved, bal.available) == (92, 0, 92)
    assert reconcile(engine) == []


def test_deduction_larger_than_its_hold_takes_the_rest_from_available(engine):
    acct, _ = builders.account(engine, credits=20)
    ledger = Ledger(engine)
    hold = ledger.reserve(acct, 5, "h")
    ledger.deduct(acct, 8, "k", USAGE, hold_id=hold.hold_id)
    bal = ledger.balance(acct)
    assert (bal.credits, bal.reserved) == (12, 0)
    assert ledger.release(hold.hold_id).released == 0
    assert reconcile(engine) == []


def test_expired_hold_is_released_and_reconcile_sees_it_first(engine):
    acct, _ = builders.account(engine, credits=10)
    ledger = Ledger(engine, hold_ttl_seconds=60)
    hold = ledger.reserve(acct, 10, "terminated-run")
    assert ledger.balance(acct).available == 0
    later = hold.expires_at + EXPIRED_HOLD_GRACE + timedelta(minutes=1)  # the sweeper lags
    breaches = reconcile(engine, now=later)
    assert [b.check for b in breaches] == ["expired_hold"]
    assert ledger.expire_holds(now=later) == 1
    assert ledger.balance(acct).available == 10
    assert reconcile(engine, now=later) == []
    assert ledger.release(hold.hold_id).replayed


def test_reserve_lazily_expires_stale_holds(engine):
    acct, _ = builders.account(engine, credits=10)
    clock = [utcnow()]
    ledger = Ledger(engine, hold_ttl_seconds=60, clock=lambda: clock[0])
    ledger.reserve(acct, 10, "stale")
    clock[0] += timedelta(minutes=2)
    assert ledger.reserve(acct, 10, "fresh").amount == 10


def test_reconcile_catches_a_tampered_balance_and_a_missing_usage_log(engine):
    acct, _ = builders.account(engine, credits=10)
    Ledger(engine).deduct(acct, 3, "k", USAGE)
    with engine.begin() as conn:
        conn.execute(update(CreditTransaction.__table__).values(balance_after=0))
        conn.execute(CreditUsageLog.__table__.delete())
        from models import Account

        conn.execute(update(Account.__table__).values(credits=99))
    checks = sorted(b.check for b in reconcile(engine))
    assert checks == ["balance", "deduction_usage"]


def test_non_positive_amounts_are_rejected(engine):
    acct, _ = builders.account(engine, credits=10)
    ledger = Ledger(engine)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="positive whole number"):
            ledger.deduct(acct, bad, "k", USAGE)
        with pytest.raises(ValueError, match="positive whole number"):
            ledger.top_up(acct, bad, "k2")


def test_a_retried_deduction_after_the_last_credit_is_spent_returns_the_first_result(engine):
    """The retry of the deduction that emptied the account is a replay, not a shortfall."""
    acct, _ = builders.account(engine, credits=10)
    ledger = Ledger(engine)
    hold = ledger.reserve(acct, 10, "batch:hold")
    for i in range(10):
        ledger.deduct(acct, 1, f"batch:image:{i}", USAGE, hold_id=hold.hold_id)
    again = ledger.deduct(acct, 1, "batch:image:9", USAGE, hold_id=hold.hold_id)
    assert again.replayed and again.balance_after == 0
    with pytest.raises(IdempotencyConflict):
        ledger.deduct(acct, 2, "batch:image:9", USAGE, hold_id=hold.hold_id)
    assert reconcile(engine) == []


def test_a_retried_reservation_that_took_the_last_credits_is_a_replay(engine):
    acct, _ = builders.account(engine, credits=10)
    ledger = Ledger(engine)
    first = ledger.reserve(acct, 10, "batch:hold")
    again = ledger.reserve(acct, 10, "batch:hold")
    assert again.replayed and again.hold_id == first.hold_id


def test_another_accounts_or_a_missing_hold_is_refused_and_nothing_is_written(engine):
    from domain.ledger import HoldNotFound

    mine, _ = builders.account(engine, credits=10)
    theirs, _ = builders.account(engine, credits=10)
    ledger = Ledger(engine)
    their_hold = ledger.reserve(theirs, 5, "their:hold")
    for hold_id in (their_hold.hold_id, 999_999):
        with pytest.raises(HoldNotFound):
            ledger.deduct(mine, 1, f"k:{hold_id}", USAGE, hold_id=hold_id)
    assert ledger.balance(mine).credits == 10 and ledger.balance(theirs).reserved == 5
    assert reconcile(engine) == []


def test_reconcile_catches_an_over_consumed_hold_and_a_done_log_without_its_success_note(engine):
    from decimal import Decimal

    from domain import tasklogs

    acct, _ = builders.account(engine, credits=10)
    ledger = Ledger(engine)
    hold = ledger.reserve(acct, 4, "h")
    with engine.begin() as conn:
        conn.execute(
            update(CreditReservation.__table__)
            .where(CreditReservation.__table__.c.id == hold.hold_id)
            .values(consumed=9, amount=13)
        )
    log_id = tasklogs.open_task_log(
        engine,
        account_id=acct,
        function_name="generate_images",
        idempotency_key="wf:log",
        workflow_id="wf",
        model_name=None,
        payload={},
    )
    tasklogs.notify(
        engine,
        account_id=acct,
        notification_type="ai_image_paused",
        title="t",
        message="m",
        idempotency_key="wf:paused",
        ai_task_log_id=log_id,
    )
    tasklogs.close_task_log(
        engine, log_id, status="success", cost=Decimal("0"), credits_used=0, result={}, error=None
    )
    checks = sorted(b.check for b in reconcile(engine))
    assert checks == ["task_log_notification"]  # 13 − 9 = 4 still matches: only the log breaks
    with engine.begin() as conn:
        conn.execute(update(CreditReservation.__table__).values(consumed=20))
    assert "hold" in {b.check for b in reconcile(engine)}


def test_deduct_many_keeps_one_entry_per_key_and_returns_each_refusal_in_place(engine):
    from domain.ledger import DeductItem

    acct, _ = builders.account(engine, credits=5)
    ledger = Ledger(engine)
    first = ledger.deduct_many(acct, [DeductItem(1, f"b:image:{i}", USAGE) for i in range(3)])
    assert [r.balance_after for r in first] == [4, 3, 2]
    # A replay and a shortfall in one call: the others still go through, once.
    mixed = ledger.deduct_many(
        acct,
        [
            DeductItem(1, "b:image:0", USAGE),  # replay
            DeductItem(1, "b:image:3", USAGE),
            DeductItem(5, "b:image:4", USAGE),  # more than is left
            DeductItem(1, "b:image:5", USAGE),
        ],
    )
    assert mixed[0].replayed and mixed[0].transaction_id == first[0].transaction_id
    assert [mixed[1].balance_after, mixed[3].balance_after] == [1, 0]
    assert isinstance(mixed[2], InsufficientCredits)
    assert ledger.balance(acct).credits == 0
    assert _count(engine, CreditUsageLog.__table__) == 5
    assert reconcile(engine) == []


# ---- lock order on PostgreSQL: holds (by id) first, then the account row -------------------
def _postgres_only(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row-lock order is a PostgreSQL matter: SQLite locks the whole database")


def _wait_until_blocked_by(
    engine: Engine, pid: int, call: futures.Future[Any], timeout: float = 10.0
) -> None:
    """Return once a backend waits for a lock that backend `pid` holds, or `call` is done."""
    deadline = time.monotonic() + timeout
    blocked_by = text(
        "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
    )
    with engine.connect() as watch:
        while not futures.wait([call], timeout=0.01).done:
            waiting = watch.execute(blocked_by, {"pid": pid}).scalar_one()
            watch.rollback()  # pg_stat_activity is a per-transaction snapshot
            if waiting:
                return
            assert time.monotonic() < deadline, "the call neither finished nor waited for X"


def _against_a_hold_locker(
    engine: Engine, hold_id: int, account_id: int, call: Callable[[], Any]
) -> Any:
    """Connection X locks the hold (as a deduction or a release does first); `call` runs in a
    thread until it finishes or waits for X; then X updates the account row and commits.
    Under one lock order both finish; a path that locks a hold while it holds the account
    row deadlocks with X (PostgreSQL aborts one of the two with DeadlockDetected)."""
    with ThreadPoolExecutor(max_workers=1) as pool, engine.connect() as x:
        x_pid = x.execute(text("SELECT pg_backend_pid()")).scalar_one()
        x.execute(select(HOLDS.c.id).where(HOLDS.c.id == hold_id).with_for_update())
        call_done = pool.submit(call)
        _wait_until_blocked_by(engine, x_pid, call_done)
        x.execute(
            update(ACCOUNTS).where(ACCOUNTS.c.id == account_id).values(credits=ACCOUNTS.c.credits)
        )
        x.commit()
        return call_done.result(timeout=30)


def test_reserve_expiring_holds_does_not_deadlock_with_a_deduction(engine):
    _postgres_only(engine)
    acct, _ = builders.account(engine, credits=30)
    clock = [utcnow()]
    ledger = Ledger(engine, hold_ttl_seconds=60, clock=lambda: clock[0])
    ledger.reserve(acct, 10, "run-1:hold")
    second = ledger.reserve(acct, 10, "run-2:hold")
    clock[0] += timedelta(minutes=2)  # both expired, the sweeper has not run yet
    fresh = _against_a_hold_locker(
        engine, second.hold_id, acct, lambda: ledger.reserve(acct, 25, "run-3:hold")
    )
    assert fresh.amount == 25  # only possible once both expired holds gave their 20 back
    assert ledger.balance(acct) == Balance(credits=30, reserved=25, available=5)
    assert reconcile(engine, now=clock[0]) == []


def test_a_deduction_on_a_closed_hold_does_not_lock_it_after_the_account_row(engine):
    _postgres_only(engine)
    acct, _ = builders.account(engine, credits=20)
    ledger = Ledger(engine)
    hold = ledger.reserve(acct, 5, "run:hold")
    ledger.release(hold.hold_id)
    charged = _against_a_hold_locker(
        engine,
        hold.hold_id,
        acct,
        lambda: ledger.deduct(acct, 1, "run:image:1", USAGE, hold_id=hold.hold_id),
    )
    assert charged.balance_after == 19
    assert reconcile(engine) == []


def test_deduct_many_locks_all_its_holds_before_the_account_row(engine):
    _postgres_only(engine)
    acct, _ = builders.account(engine, credits=20)
    ledger = Ledger(engine)
    first = ledger.reserve(acct, 5, "a:hold")
    second = ledger.reserve(acct, 5, "b:hold")
    items = [
        DeductItem(1, "a:image:1", USAGE, hold_id=first.hold_id),
        DeductItem(1, "b:image:1", USAGE, hold_id=second.hold_id),
    ]
    results = _against_a_hold_locker(
        engine, second.hold_id, acct, lambda: ledger.deduct_many(acct, items)
    )
    assert [r.balance_after for r in results] == [19, 18]
    assert reconcile(engine) == []


# ---- reconcile and the hold sweeper --------------------------------------------------------
def test_an_expired_hold_is_a_breach_only_once_the_sweeper_should_have_released_it(engine):
    acct, _ = builders.account(engine, credits=10)
    hold = Ledger(engine, hold_ttl_seconds=60).reserve(acct, 10, "terminated-run")
    overdue = hold.expires_at + EXPIRED_HOLD_GRACE
    for not_yet in (hold.expires_at + timedelta(seconds=1), overdue - timedelta(seconds=1)):
        assert reconcile(engine, now=not_yet) == [], not_yet
    breaches = reconcile(engine, now=overdue + timedelta(seconds=1))
    assert [(b.check, b.account_id) for b in breaches] == [("expired_hold", acct)]
    assert (
        reconcile(engine, now=hold.expires_at + timedelta(seconds=1), hold_grace=timedelta()) != []
    )


def test_the_grace_follows_the_sweepers_interval():
    assert timedelta(seconds=SweeperInput().interval_seconds) == HOLD_SWEEP_INTERVAL
    assert EXPIRED_HOLD_GRACE > HOLD_SWEEP_INTERVAL


# ---- exact USD sums ------------------------------------------------------------------------
def test_usd_totals_are_exact_decimals_on_both_databases(engine):
    amounts = [Decimal("99999999.999999")] * 200 + [Decimal("0.1"), Decimal("0.000001")] * 100
    exact = sum(amounts, Decimal(0))
    assert Decimal(sum(float(a) for a in amounts)).quantize(Decimal("0.000001")) != exact
    acct, _ = builders.account(engine, credits=len(amounts))
    ledger = Ledger(engine)
    usage = [Usage("image_generation", cost_usd=a, billed_usd=Decimal("0.010001")) for a in amounts]
    results = ledger.deduct_many(acct, [DeductItem(1, f"k:{i}", u) for i, u in enumerate(usage)])
    assert all(not isinstance(r, Exception) for r in results)
    totals = ledger.usage_totals(acct, "image_generation")
    assert (totals.count, totals.credits) == (400, 400)
    assert totals.cost_usd == exact == Decimal("20000000009.999900")
    assert totals.billed_usd == Decimal("4.000400")
    assert isinstance(totals.cost_usd, Decimal) and isinstance(totals.billed_usd, Decimal)
    assert ledger.usage_totals(acct, "clustering").cost_usd == Decimal(0)


# ---- SQLite: reads are deferred, writes BEGIN IMMEDIATE ------------------------------------
def _sqlite_only(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's BEGIN modes; PostgreSQL readers never wait for writers")


def test_a_read_answers_while_another_connection_holds_a_write_transaction(engine):
    acct, _ = builders.account(engine, credits=10)
    ledger = Ledger(engine)
    with ThreadPoolExecutor(max_workers=1) as pool, engine.begin() as writer:
        ledger.credit_in(writer, acct, 5, "stripe:pi_1", "Credit purchase")  # not committed
        read = pool.submit(ledger.balance, acct)
        # Answered while the writer is still open: the read did not queue behind it
        # (before: its BEGIN IMMEDIATE waited up to the 30 s busy timeout).
        assert read.result(timeout=2).credits == 10
    assert ledger.balance(acct).credits == 15
    assert reconcile(engine) == []


@contextmanager
def _write_transaction(engine: Engine, kind: str) -> Iterator[Any]:
    if kind == "engine.begin":
        with engine.begin() as conn:
            yield conn
    else:
        with Session(engine) as session, session.begin():
            yield session


@pytest.mark.parametrize("second", ["engine.begin", "session"])
def test_two_write_transactions_still_serialise(engine, second):
    _sqlite_only(engine)
    acct, _ = builders.account(engine, credits=10, name="n")
    name = select(ACCOUNTS.c.name).where(ACCOUNTS.c.id == acct)
    first_read, first_may_write, second_starts, second_read = Event(), Event(), Event(), Event()

    def append(kind: str, read: Event, before_write: Event | None) -> None:
        with _write_transaction(engine, kind) as tx:
            seen = tx.execute(name).scalar_one()
            read.set()
            if before_write is not None:
                assert before_write.wait(10)
            tx.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == acct).values(name=seen + "+"))

    def second_writer() -> None:
        second_starts.set()
        append(second, second_read, None)

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(append, "engine.begin", first_read, first_may_write)
        assert first_read.wait(10)
        later = pool.submit(second_writer)
        assert second_starts.wait(10)
        # The second writer's BEGIN IMMEDIATE waits for the first: it cannot even read yet.
        assert not second_read.wait(0.3)
        first_may_write.set()
        first.result(timeout=10)
        later.result(timeout=10)
    with engine.connect() as conn:
        assert conn.execute(name).scalar_one() == "n++"  # no lost update, no SQLITE_BUSY


def test_a_write_on_a_read_connection_is_refused_on_sqlite(engine):
    _sqlite_only(engine)
    acct, _ = builders.account(engine, credits=10)
    with engine.connect() as conn:
        conn.execute(select(ACCOUNTS.c.id))
        with pytest.raises(WriteInReadTransaction, match=r"engine\.begin\(\)"):
            conn.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == acct).values(name="x"))
