"""Engine creation with the per-database settings the ledger relies on, and portable types.

SQLite: WAL and a busy timeout. A transaction opened on purpose — `engine.begin()`,
`Connection.begin()`, a `Session` — is a write transaction and starts `BEGIN IMMEDIATE`,
so two writers never both read-then-write (the deferred-transaction upgrade fails with
SQLITE_BUSY instead of waiting). A transaction SQLAlchemy opens by itself for a
statement on `engine.connect()` (autobegin) is a read: it starts a deferred `BEGIN`, reads
the last committed state under WAL without waiting for a writer, and is refused any
statement that starts with a write verb (`WriteInReadTransaction`), so the rule is not
broken silently. Write with `engine.begin()` or a Session; read with `engine.connect()`.
PostgreSQL: a connection pool sized for the worker's activity threads, with pre-ping.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Engine,
    cast,
    create_engine,
    event,
    func,
    type_coerce,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session

MICRO_USD = 1_000_000  # USD columns are Numeric(14, 6): a micro-dollar is their exact unit


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC (portable across SQLite and PostgreSQL), returns aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class MicroUSD(TypeDecorator):
    """A whole number of micro-dollars in SQL, an exact `Decimal` of dollars in Python."""

    impl = BigInteger
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(int(value)).scaleb(-6)


def usd_sum(column: ColumnElement[Any]) -> ColumnElement[Decimal]:
    """SUM of a USD column as an exact Decimal on both databases (0 for no rows).

    SQLite has no decimal type: a Numeric value is stored as a float and SUM adds floats,
    so a total beyond ~10^9 dollars, or of enough small amounts, loses the sixth decimal.
    Each amount is turned into integer micro-dollars first (exact: a stored Numeric(14, 6)
    is within far less than half a micro-dollar of its value, so ROUND recovers it), and
    integers add exactly on both databases. Summing in SQL keeps it one query for any
    number of rows; CAST to text would not help, the float sum is already inexact.
    """
    micros = cast(func.round(column * MICRO_USD), BigInteger)
    return type_coerce(func.coalesce(func.sum(micros), 0), MicroUSD())


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, pool_size: int = 20, echo: bool = False) -> Engine:
    """Create the engine for `url` with the locking behaviour the ledger needs."""
    if is_sqlite(url):
        engine = create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=60,
    )


class WriteInReadTransaction(RuntimeError):
    """A write on SQLite inside a read (deferred) transaction: a bug in the caller."""


_IMPLICIT_BEGIN = "igny8_implicit_begin"  # Connection.info: this begin is an autobegin
_READ_TX = "igny8_read_transaction"  # Connection.info: the open transaction is a read
_WRITE_SQL = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.I)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "before_execute")
    def _autobegin_as_read(conn: Any, *_args: Any) -> None:
        # The statement is about to autobegin a transaction: begin it here, marked, so
        # `_on_begin` can tell it from an explicit begin (both fire the same event).
        # exec_driver_sql skips this event; its autobegin stays IMMEDIATE, the safe side.
        if conn.get_transaction() is None:
            conn.info[_IMPLICIT_BEGIN] = True
            try:
                conn.begin()
            finally:
                conn.info.pop(_IMPLICIT_BEGIN, None)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read = conn.info.get(_IMPLICIT_BEGIN, False)
        conn.info[_READ_TX] = read
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    @event.listens_for(engine, "before_cursor_execute")
    def _refuse_writes_in_reads(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if conn.info.get(_READ_TX) and _WRITE_SQL.match(statement):
            raise WriteInReadTransaction(
                "A write on a connection that began as a read (engine.connect()): "
                "open write transactions with engine.begin() or a Session, so SQLite "
                "takes the write lock up front (BEGIN IMMEDIATE)"
            )


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
