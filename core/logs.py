"""Logging for every igny8 process: readable text by default, JSON lines with
`LOG_FORMAT=json`; every line carries the ids of what it is about; no secret in any line.

Ids. A line gets `account_id`, `site_id`, `batch_id` / `run_id`, `workflow_id`,
`workflow_run_id`, `activity_id` and `activity_type` where they apply, from three places:
- the log context (a contextvar holding one dict per API request or activity execution,
  filled by `bind_log_context`: the API's auth dependency adds the account and the path's
  ids, the worker's activity interceptor the ids found in the activity's input);
- Temporal's own loggers: `activity.logger` and `workflow.logger` put the activity's or
  workflow's info on the record (`temporal_activity` / `temporal_workflow`), and any line
  logged inside an activity gets `activity.info()`;
- workflow ids, which carry the account and the site (`image-batch-<account>-…`,
  `automation-<account>-<site>-…`, `publisher-<account>-<site>`).

Secrets. Every line is redacted as the last step, after formatting (so exceptions and
tracebacks are covered too): the values of the settings' secrets, every secret registered
at run time (`register_secret`: WordPress application passwords, API keys seen by the
API), and the shapes secrets take on the wire (`Bearer …`, `Basic …`, `sk-…`, a URL's
`user:password@`, `password=…`/`api_key=…` pairs).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import Settings

# The ids a line may carry, in the order text lines show them.
CONTEXT_KEYS = (
    "account_id",
    "site_id",
    "batch_id",
    "run_id",
    "workflow_id",
    "workflow_run_id",
    "workflow_type",
    "activity_id",
    "activity_type",
    "attempt",
    "request_id",
)
REDACTED = "***"
_HANDLER_MARK = "_igny8_handler"

_log_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "igny8_log_context", default=None
)


# ---- the log context ---------------------------------------------------------------------
def new_log_context(**ids: Any) -> contextvars.Token[dict[str, Any] | None]:
    """Start a fresh context (one API request, one activity execution). It is one dict,
    shared with threads the work hands off to (they copy the contextvar, not the dict),
    so ids bound in a thread-pool dependency show on the request's later lines too."""
    return _log_context.set({k: v for k, v in ids.items() if v is not None})


def reset_log_context(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _log_context.reset(token)


def bind_log_context(**ids: Any) -> None:
    """Add ids to the current context (starting one if there is none)."""
    ctx = _log_context.get()
    if ctx is None:
        ctx = {}
        _log_context.set(ctx)
    ctx.update({k: v for k, v in ids.items() if v is not None})


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """A fresh context for the block."""
    token = new_log_context(**ids)
    try:
        yield
    finally:
        reset_log_context(token)


def current_log_context() -> dict[str, Any]:
    return dict(_log_context.get() or {})


# Workflow ids carry the account (and the site): see workflows/client.py.
_ID_SHAPES = (
    re.compile(r"^automation-(?P<account_id>\d+)-(?P<site_id>\d+)-"),
    re.compile(r"^publisher-(?P<account_id>\d+)-(?P<site_id>\d+)$"),
    re.compile(r"^(?:image|text)-batch-(?P<account_id>\d+)-"),
)


def ids_from_workflow_id(workflow_id: str | None) -> dict[str, Any]:
    """account_id / site_id and batch_id / run_id that a workflow id names."""
    if not workflow_id:
        return {}
    for shape in _ID_SHAPES:
        match = shape.match(workflow_id)
        if match:
            ids: dict[str, Any] = {k: int(v) for k, v in match.groupdict().items()}
            if workflow_id.startswith(("image-batch-", "text-batch-")):
                ids["batch_id"] = workflow_id
            elif workflow_id.startswith("automation-"):
                ids["run_id"] = workflow_id
            return ids
    return {}


def _temporal_ids(record: logging.LogRecord) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    wf = getattr(record, "temporal_workflow", None)
    if isinstance(wf, Mapping):
        ids.update(
            workflow_id=wf.get("workflow_id"),
            workflow_run_id=wf.get("run_id"),
            workflow_type=wf.get("workflow_type"),
        )
    act = getattr(record, "temporal_activity", None)
    if isinstance(act, Mapping):
        ids.update(
            workflow_id=act.get("workflow_id"),
            workflow_run_id=act.get("workflow_run_id"),
            workflow_type=act.get("workflow_type"),
            activity_id=act.get("activity_id"),
            activity_type=act.get("activity_type"),
            attempt=act.get("attempt"),
        )
    elif "temporalio" in sys.modules:
        from temporalio import activity

        if activity.in_activity():
            info = activity.info()
            ids.update(
                workflow_id=info.workflow_id,
                workflow_run_id=info.workflow_run_id,
                workflow_type=info.workflow_type,
                activity_id=info.activity_id,
                activity_type=info.activity_type,
                attempt=info.attempt,
            )
    return {k: v for k, v in ids.items() if v is not None}


def record_ids(record: logging.LogRecord) -> dict[str, Any]:
    """Every id that applies to a record, most specific last."""
    ids: dict[str, Any] = {}
    temporal = _temporal_ids(record)
    ids.update(ids_from_workflow_id(temporal.get("workflow_id")))
    ctx = _log_context.get()
    if ctx:
        ids.update(ids_from_workflow_id(ctx.get("workflow_id")))
        ids.update(ctx)
    ids.update(temporal)
    for key in CONTEXT_KEYS:  # `extra={"site_id": …}` on the call itself
        value = record.__dict__.get(key)
        if value is not None:
            ids[key] = value
    return {k: ids[k] for k in CONTEXT_KEYS if ids.get(k) is not None}


# ---- secrets -----------------------------------------------------------------------------
_WIRE_SHAPES = re.compile(
    # an Authorization header's credentials (a digit, symbol or inner capital: not
    # "Basic settings")
    r"(?P<scheme>\b(?i:bearer|basic)\s+)"
    r"(?=[\w.~+/=-]*(?:[\d+/=_-]|[a-z][A-Z]))[\w.~+/=-]{8,}"
    # OpenAI-style keys, and igny8's own API keys (igny8_ + 43 characters; table names
    # such as igny8_billing_creditusagelog are shorter and stay readable)
    r"|(?P<sk>\bsk-)[\w-]{6,}"
    r"|(?P<igk>\bigny8_)[\w-]{40,}"
    # a URL's user:password@
    r"|(?P<url>://[^/\s:@]+:)[^/\s@]+(?=@)"
    # password=…, "api_key": "…", token: …
    r"|(?P<pair>(?<![A-Za-z0-9])(?i:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|secret[_-]?key"
    r"|token|authorization)\b[\"']?\s*[:=]\s*[\"']?)(?!\*\*\*)"
    r"(?:(?i:bearer|basic)\s+)?[^\s\"',&}]{3,}"
)


class SecretRedactor:
    """Replaces known secret values and secret-shaped text with `***`."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def add(self, *values: str | None) -> None:
        with self._lock:
            before = len(self._secrets)
            for value in values:
                if value and len(value) >= 4:
                    self._secrets.add(value)
                    # WordPress shows application passwords in groups of four; the
                    # same password without spaces authenticates too.
                    if " " in value:
                        self._secrets.add(value.replace(" ", ""))
            if len(self._secrets) != before:
                ordered = sorted(self._secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def __call__(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        return _WIRE_SHAPES.sub(_keep_prefix, text)


def _keep_prefix(match: re.Match[str]) -> str:
    for group in ("scheme", "sk", "igk", "url", "pair"):
        prefix = match.group(group)
        if prefix is not None:
            return prefix + REDACTED
    return REDACTED


REDACTOR = SecretRedactor()


def register_secret(*values: str | None) -> None:
    """A secret learned at run time (a decrypted WordPress password, an API key): never
    printed from now on, by any logger of this process."""
    REDACTOR.add(*values)


def settings_secrets(settings: Settings) -> list[str]:
    """The secret values in the settings, and the database URL's password."""
    values: list[str] = []
    for _name, value in settings:
        if hasattr(value, "get_secret_value"):
            values.append(value.get_secret_value())
    match = re.match(r"^[^:]+://[^:/@]+:([^@]+)@", settings.database_url or "")
    if match:
        values.append(match.group(1))
    return [v for v in values if v and v not in PLACEHOLDERS]


# Well-known development defaults: public anyway, and too common a word to redact.
PLACEHOLDERS = {"dev-admin-key", "dev-secret-key", "change-me", "changeme"}


# ---- formatting ------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, service, the ids, exception."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        line.update(record_ids(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return REDACTOR(json.dumps(line, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [account_id=1 workflow_id=…]`, redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = record_ids(record)
        if ids:
            first, newline, rest = text.partition("\n")
            tags = " ".join(f"{k}={v}" for k, v in ids.items())
            text = f"{first} [{tags}]{newline}{rest}"
        return REDACTOR(text)


def make_formatter(log_format: str, service: str) -> logging.Formatter:
    return JsonFormatter(service) if log_format == "json" else TextFormatter()


def make_handler(log_format: str, service: str, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(log_format, service))
    setattr(handler, _HANDLER_MARK, True)
    return handler


def configure_logging(settings: Settings, service: str, stream: Any = None) -> logging.Handler:
    """Root logging for a process: one handler in the chosen format (replacing one that
    this function installed before), level from LOG_LEVEL, the settings' secrets known
    to the redactor, and uvicorn's loggers sent through the same handler."""
    register_secret(*settings_secrets(settings))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = make_handler(settings.log_format, service, stream)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Warnings and uncaught exceptions become log lines too (one JSON object each),
    # instead of raw text on stderr between the lines.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return handler


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("igny8").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread else "?"
    logging.getLogger("igny8").error(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
