"""igny8's business metrics, in the Prometheus format.

Each counter is incremented where its fact happens, and only once the fact is committed:
the ledger counts a deduction after its database transaction commits and never counts a
replay (a retried activity that found its key already used), so over any window
`igny8_credits_charged_total` moves exactly as the ledger's deductions do. Nothing here is
ever touched from workflow code (workflows replay: a count there would repeat).

The worker and the API serve these (with the Temporal SDK's own metrics) on
`WORKER_METRICS_PORT` / `API_METRICS_PORT` (core.ops_http); 0 leaves them unserved.
Labels stay low-cardinality on purpose: models, operation types, outcomes; never account
or site ids (those are in the logs and traces).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# `*_created` series double every counter for nothing a dashboard uses.
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST

# ---- credits and the ledger -----------------------------------------------------------------
CREDITS_RESERVED = Counter(
    "igny8_credits_reserved",
    "Credits put on hold by reservations (committed, replays not counted)",
    ["operation_type"],
)
CREDITS_CHARGED = Counter(
    "igny8_credits_charged",
    "Credits deducted by committed ledger deductions (replays not counted)",
    ["operation_type"],
)
DEDUCTIONS = Counter(
    "igny8_ledger_deductions",
    "Committed ledger deductions (one per idempotency key, ever)",
    ["operation_type"],
)
CREDITS_RELEASED = Counter(
    "igny8_credits_released",
    "Held credits given back unused: `released` when a run closes its hold, `expired` "
    "when a hold passed its expiry",
    ["reason"],
)
CREDITS_ADDED = Counter(
    "igny8_credits_added",
    "Credits added to balances (purchases, refunds, adjustments)",
    ["transaction_type"],
)
CREDIT_REFUSALS = Counter(
    "igny8_credit_refusals",
    "Reservations or deductions refused for insufficient credits",
    ["operation"],
)
LEDGER_CONFLICTS = Counter(
    "igny8_ledger_conflicts",
    "Ledger writes that met an earlier write of the same key: `concurrent_replay` (a twin "
    "committed first; answered with its result) or `key_reused` (same key, other amount: "
    "a bug, refused)",
    ["kind"],
)

# ---- what the pipeline produced ---------------------------------------------------------------
IMAGES = Counter(
    "igny8_images",
    "Images stored (`generated`) or failed for good (`failed`)",
    ["model", "outcome"],
)
ARTICLES = Counter(
    "igny8_articles",
    "Articles written by generate_content (`generated`) or failed for good (`failed`)",
    ["outcome"],
)
AI_ITEMS = Counter(
    "igny8_ai_items",
    "Text AI function items answered and recorded (`done`) or failed for good (`failed`)",
    ["function", "outcome"],
)

# ---- providers ------------------------------------------------------------------------------------
PROVIDER_CALLS = Counter(
    "igny8_provider_calls",
    "AI provider calls by model and outcome (`ok`, or the error code: rate_limited, "
    "server_error, timeout, content_policy, ...)",
    ["provider", "model", "outcome"],
)
PROVIDER_SECONDS = Histogram(
    "igny8_provider_call_seconds",
    "How long an AI provider call took (any outcome)",
    ["provider", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)
PROVIDER_RATE_LIMITED = Counter(
    "igny8_provider_rate_limited",
    "429 answers from AI providers",
    ["model"],
)
RETRY_AFTER_SECONDS = Histogram(
    "igny8_provider_retry_after_seconds",
    "Back-offs a provider asked for (Retry-After), each applied to every caller of the model",
    ["model"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
BACKOFF_WAIT_SECONDS = Histogram(
    "igny8_provider_backoff_wait_seconds",
    "Time calls spent waiting out a model's Retry-After back-off",
    ["model"],
    buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
)

# ---- publishing -------------------------------------------------------------------------------
PUBLISH = Counter(
    "igny8_publish",
    "Articles published to WordPress (`published`) or failed after their retries (`failed`)",
    ["outcome"],
)

# ---- the API -----------------------------------------------------------------------------------
WORKFLOWS_STARTED = Counter(
    "igny8_workflows_started",
    "Image batches and automation runs started through the API",
    ["kind"],
)
API_REQUESTS = Counter(
    "igny8_api_requests",
    "HTTP requests answered by the API, by route template and status code",
    ["method", "route", "status"],
)
API_SECONDS = Histogram(
    "igny8_api_request_seconds",
    "API request latency by route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def provider_outcome(exc: BaseException | None) -> str:
    """`ok`, a ProviderError's code, or the exception's type name."""
    if exc is None:
        return "ok"
    code = getattr(exc, "code", None)
    return str(code) if isinstance(code, str) and code else type(exc).__name__


def count_provider_call(
    provider: str, model: str, seconds: float, exc: BaseException | None = None
) -> None:
    outcome = provider_outcome(exc)
    PROVIDER_CALLS.labels(provider.lower(), model, outcome).inc()
    PROVIDER_SECONDS.labels(provider.lower(), model).observe(seconds)
    if outcome == "rate_limited":
        PROVIDER_RATE_LIMITED.labels(model).inc()


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(registry)
