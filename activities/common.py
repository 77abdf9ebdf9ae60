"""Shared pieces for activity I/O: frozen pydantic models and error translation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.ledger import IdempotencyConflict, InsufficientCredits, LedgerError
from domain.pricing import ModelUnavailable


class Frozen(BaseModel):
    """Base of every activity and workflow input/output: immutable, JSON via pydantic."""

    model_config = ConfigDict(frozen=True)


def non_retryable(exc: Exception) -> ApplicationError:
    """A user-level refusal that no retry can fix, with its class name as the error type."""
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


def translate_domain_error(exc: Exception) -> Exception:
    if isinstance(exc, InsufficientCredits):
        return ApplicationError(
            str(exc),
            {"required": exc.required, "available": exc.available},
            type="InsufficientCredits",
            non_retryable=True,
        )
    if isinstance(exc, IdempotencyConflict | ModelUnavailable | LedgerError | ValueError):
        return non_retryable(exc)  # no retry can fix a refused or malformed request
    return exc


@asynccontextmanager
async def heartbeating(interval_s: float = 2.0) -> AsyncIterator[None]:
    """Heartbeat while a slow provider call runs, so a dead worker is noticed within the
    heartbeat timeout instead of the whole start-to-close timeout."""

    async def beat() -> None:
        while True:  # sleep first: a fast call sends no heartbeat at all
            await asyncio.sleep(interval_s)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
