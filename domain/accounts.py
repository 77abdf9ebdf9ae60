"""Accounts and API keys. Keys are random, shown once, and stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update

from core.logs import bind_log_context
from domain.ledger import Ledger
from models.accounts import Account, ApiKey
from models.db import utcnow

KEY_PREFIX = "igny8_"
ACCOUNTS = Account.__table__
KEYS = ApiKey.__table__


@dataclass(frozen=True)
class CreatedAccount:
    id: int
    name: str
    credits: int
    api_key: str


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_account(engine: Engine, name: str, credits: int = 0) -> CreatedAccount:
    """Account, its first API key and its opening credits, all in one transaction."""
    if credits < 0:
        raise ValueError("Opening credits cannot be negative")
    api_key = new_api_key()
    ledger = Ledger(engine)
    with engine.begin() as conn:
        account_id = conn.execute(
            insert(ACCOUNTS)
            .values(name=name, credits=0, credits_reserved=0, is_active=True, created_at=utcnow())
            .returning(ACCOUNTS.c.id)
        ).scalar_one()
        conn.execute(
            insert(KEYS).values(
                account_id=account_id,
                key_hash=hash_key(api_key),
                key_prefix=api_key[:12],
                name="default",
                is_active=True,
                created_at=utcnow(),
            )
        )
        if credits:
            ledger.credit_in(
                conn, account_id, credits, f"account-open:{account_id}", "Opening balance"
            )
    return CreatedAccount(account_id, name, credits, api_key)


def add_api_key(engine: Engine, account_id: int, name: str = "default") -> str:
    api_key = new_api_key()
    with engine.begin() as conn:
        conn.execute(
            insert(KEYS).values(
                account_id=account_id,
                key_hash=hash_key(api_key),
                key_prefix=api_key[:12],
                name=name,
                is_active=True,
                created_at=utcnow(),
            )
        )
    return api_key


def authenticate(engine: Engine, api_key: str) -> int | None:
    """The account id for an active key on an active account, else None."""
    with engine.connect() as conn:
        row = conn.execute(
            select(KEYS.c.id, KEYS.c.account_id)
            .join(ACCOUNTS, ACCOUNTS.c.id == KEYS.c.account_id)
            .where(
                KEYS.c.key_hash == hash_key(api_key),
                KEYS.c.is_active.is_(True),
                ACCOUNTS.c.is_active.is_(True),
            )
        ).first()
    if row is None:
        return None
    bind_log_context(account_id=row.account_id)  # this request's (or job's) log lines
    return row.account_id


def deactivate_key(engine: Engine, api_key: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(KEYS).where(KEYS.c.key_hash == hash_key(api_key)).values(is_active=False)
        )
