"""Timeouts and retry policies for every activity call, and reading an activity failure."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

# Database work: short, retried with back-off; a refusal no retry can fix is not retried.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=30,
    non_retryable_error_types=[
        "InsufficientCredits",
        "IdempotencyConflict",
        "ModelUnavailable",
        "UnknownAIFunction",
    ],
)
DB_TIMEOUT = timedelta(seconds=15)
PLAN_TIMEOUT = timedelta(seconds=60)

# Provider calls: 429s and 5xx retry with back-off (Retry-After when the provider sends
# one); classified permanent errors are not retried (activities raise them non-retryable).
GENERATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
)
# A call first waits for a provider slot (at most SLOT_WAIT), then makes its call (the
# provider timeout) and stores the result; a dead worker is noticed by the heartbeat.
GENERATE_TIMEOUT = timedelta(seconds=600)
GENERATE_HEARTBEAT = timedelta(seconds=10)
SLOT_WAIT_S = 120.0

# While paused, holds are kept alive (the ledger's TTL would otherwise release them).
HOLD_KEEPALIVE = timedelta(minutes=15)


def cause(err: BaseException) -> BaseException:
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return err


def message(err: BaseException) -> str:
    """The user-facing message of an activity failure, without the error-type prefix."""
    root = cause(err)
    return getattr(root, "message", None) or str(root)
