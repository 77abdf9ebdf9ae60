"""Turn every way a provider call can fail into one ProviderError with a retry decision.

There is exactly one retry layer (Temporal's), so this module is where "retry or give up"
is decided: 429 rate limits, 5xx, timeouts and dropped connections retry (honouring
Retry-After); an empty quota, a rejected key, a content-policy refusal or a malformed
request fail at once, because repeating them only burns time and money.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import openai

from providers.base import RETRYABLE_CODES, ProviderError

try:  # openai>=3 talks through httpx2; older SDKs through httpx. Accept both families.
    import httpx2

    _TIMEOUT_EXC: tuple[type[BaseException], ...] = (
        httpx.TimeoutException,
        httpx2.TimeoutException,
        TimeoutError,
    )
    _TRANSPORT_EXC: tuple[type[BaseException], ...] = (httpx.TransportError, httpx2.TransportError)
    _STATUS_EXC: tuple[type[BaseException], ...] = (httpx.HTTPStatusError, httpx2.HTTPStatusError)
except ImportError:  # pragma: no cover - depends on the installed SDK generation
    _TIMEOUT_EXC = (httpx.TimeoutException, TimeoutError)
    _TRANSPORT_EXC = (httpx.TransportError,)
    _STATUS_EXC = (httpx.HTTPStatusError,)

_QUOTA_CODES = {"insufficientquota", "insufficientcredits", "billinghardlimitreached"}
_POLICY_MARKERS = ("contentpolicy", "moderation", "safety", "nsfw")


def make_error(
    code: str,
    message: str,
    *,
    status: int | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """Build a ProviderError whose retry flag always follows its code."""
    return ProviderError(
        message,
        code=code,
        retryable=RETRYABLE_CODES.get(code, True),
        status=status,
        retry_after=retry_after,
    )


# --------------------------------------------------------------------------- Retry-After


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: datetime | None = None
) -> float | None:
    """Seconds the provider asked us to wait: `retry-after-ms`, then seconds, then an HTTP date."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    millis = _as_float(lowered.get("retry-after-ms"))
    if millis is not None:
        return max(0.0, millis / 1000.0)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _as_float(raw)
    if seconds is not None:
        return max(0.0, seconds)
    return _seconds_until_http_date(raw, now)


def _as_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _seconds_until_http_date(raw: str, now: datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# --------------------------------------------------------------------------- HTTP status


def classify_http_status(
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
    *,
    provider: str = "Runware",
) -> ProviderError:
    """Classify an HTTP error response; `body` may be parsed JSON, text, bytes or None."""
    code, detail = extract_error(body)
    norm = _normalise(code)
    retry_after = parse_retry_after(headers)
    if norm in _QUOTA_CODES or status == 402:
        return _quota_error(provider, status)
    if status == 429:
        return _rate_limit_error(provider, status, retry_after)
    if status in (401, 403):
        return make_error(
            "auth_error", f"The {provider} API key was rejected ({status})", status=status
        )
    if any(marker in norm for marker in _POLICY_MARKERS):
        return make_error(
            "content_policy",
            f"{provider} rejected the prompt under its content policy",
            status=status,
        )
    return _generic_status_error(provider, status, detail, retry_after)


def _generic_status_error(
    provider: str, status: int, detail: str, retry_after: float | None
) -> ProviderError:
    suffix = f": {detail}" if detail else ""
    if status == 408:
        return make_error(
            "timeout", f"{provider} timed out handling the request (408)", status=status
        )
    if status >= 500:
        return make_error(
            "server_error",
            f"{provider} had a temporary server error ({status})",
            status=status,
            retry_after=retry_after,
        )
    if 400 <= status < 500:
        return make_error(
            "invalid_request", f"{provider} rejected the request ({status}){suffix}", status=status
        )
    return make_error(
        "bad_response", f"{provider} answered with unexpected HTTP status {status}", status=status
    )


def _quota_error(provider: str, status: int) -> ProviderError:
    return make_error(
        "insufficient_quota",
        f"The {provider} account has run out of quota or credit; add billing, then retry",
        status=status,
    )


def _rate_limit_error(provider: str, status: int, retry_after: float | None) -> ProviderError:
    when = f"retry after {retry_after:.1f} s" if retry_after is not None else "retry later"
    return make_error(
        "rate_limited",
        f"Rate limited by {provider}; {when}",
        status=status,
        retry_after=retry_after,
    )


def extract_error(body: Any) -> tuple[str | None, str]:
    """(code, message) from OpenAI `{"error": {}}`, Runware `{"errors": []}` or flat bodies."""
    body = _decode_body(body)
    if isinstance(body, dict):
        inner: Any = body.get("error", body)
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            inner = errors[0]
        if isinstance(inner, dict):
            code = inner.get("code") or inner.get("type")
            message = inner.get("message") or ""
            return (str(code) if code else None), _shorten(str(message))
        if isinstance(inner, str):
            return None, _shorten(inner)
    if isinstance(body, str):
        return None, _shorten(body)
    return None, ""


def _decode_body(body: Any) -> Any:
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            return json.loads(body)
        except ValueError:
            return body.strip()
    return body


def _normalise(code: str | None) -> str:
    return (code or "").lower().replace("_", "").replace("-", "")


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- exceptions


def classify_openai_error(exc: BaseException, *, provider: str = "OpenAI") -> ProviderError:
    """Map an openai SDK / httpx exception (or anything else raised by a call) to ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return _from_status_error(exc, provider)
    if isinstance(exc, (openai.APITimeoutError, *_TIMEOUT_EXC)) and not _refused(exc):
        return make_error("timeout", f"{provider} did not answer within the time limit")
    if isinstance(exc, (openai.APIConnectionError, *_TRANSPORT_EXC)):
        return _connection_error(exc, provider)
    if isinstance(exc, _STATUS_EXC):
        response = exc.response  # type: ignore[attr-defined]
        return classify_http_status(
            response.status_code, _safe_body(response), response.headers, provider=provider
        )
    return _classify_other(exc, provider)


def _refused(exc: BaseException) -> bool:
    """A connection that could not be made, whatever the transport called it: the SDK's
    aiohttp transport reports a refused connection as a connect timeout."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or (
            type(current).__name__ == "ClientConnectorError"  # aiohttp's, not imported here
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _from_status_error(exc: openai.APIStatusError, provider: str) -> ProviderError:
    body: Any = exc.body
    if exc.code and not (isinstance(body, dict) and body.get("code")):
        body = {"code": exc.code, "message": exc.message}
    return classify_http_status(exc.status_code, body, exc.response.headers, provider=provider)


def _connection_error(exc: BaseException, provider: str) -> ProviderError:
    cause = exc.__cause__ or exc.__context__
    detail = str(cause or exc) or type(cause or exc).__name__
    return make_error("connection_error", f"Could not reach {provider}: {_shorten(detail, 160)}")


def _classify_other(exc: BaseException, provider: str) -> ProviderError:
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return make_error(
            "content_policy", f"{provider} refused to answer under its content policy"
        )
    if isinstance(exc, openai.LengthFinishReasonError):
        return make_error("bad_response", f"{provider} stopped at the output token limit")
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        return make_error("bad_response", f"{provider} returned an unusable response: {exc}")
    name = type(exc).__name__
    return make_error("unexpected_error", f"Unexpected error calling {provider}: {name}: {exc}")


def _safe_body(response: Any) -> Any:
    try:
        return response.json()
    except Exception:
        try:
            return response.text
        except Exception:
            return None
