"""The provider contract: result types, the one classified error, and the two protocols.

Activities depend on these names only, so swapping OpenAI, Runware or the simulator never
touches workflow or billing code. Results are frozen dataclasses so they can be logged and
passed around without anyone mutating token counts that billing relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

# Every code a ProviderError may carry, with whether Temporal should retry it by default.
RETRYABLE_CODES: dict[str, bool] = {
    "rate_limited": True,
    "server_error": True,
    "timeout": True,
    "connection_error": True,
    "bad_response": True,
    "unexpected_error": True,
    "insufficient_quota": False,
    "auth_error": False,
    "content_policy": False,
    "invalid_request": False,
}


@dataclass(frozen=True)
class TextResult:
    """A structured (JSON) completion plus the token usage that billing charges for."""

    data: dict[str, Any]
    raw: str
    model: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ImageResult:
    """Image bytes already downloaded, because provider URLs expire within the hour."""

    data: bytes
    mime_type: str
    model: str
    provider_cost_usd: Decimal | None
    revised_prompt: str | None = None


class ProviderError(Exception):
    """Classified provider failure. `retryable` decides whether Temporal retries.

    `message` is written for the person reading the task log or notification; `code` is
    for code (one of RETRYABLE_CODES); `retry_after` is the provider's requested back-off.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.message!r}, code={self.code!r}, retryable={self.retryable}, "
            f"status={self.status}, retry_after={self.retry_after})"
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Keyword-only arguments defeat Exception's default pickling; spell it out."""
        return (_rebuild_provider_error, self._args())

    def _args(self) -> tuple[str, str, bool, int | None, float | None]:
        return (self.message, self.code, self.retryable, self.status, self.retry_after)

    def to_details(self) -> dict[str, Any]:
        """Plain-dict form, e.g. for Temporal ApplicationError details or task logs."""
        return {
            "message": self.message,
            "code": self.code,
            "retryable": self.retryable,
            "status": self.status,
            "retry_after": self.retry_after,
        }


def _rebuild_provider_error(
    message: str, code: str, retryable: bool, status: int | None, retry_after: float | None
) -> ProviderError:
    return ProviderError(
        message, code=code, retryable=retryable, status=status, retry_after=retry_after
    )


@runtime_checkable
class TextProvider(Protocol):
    """Anything that turns a prompt into a JSON object matching a JSON schema."""

    async def complete_json(
        self,
        *,
        model: str,
        system: str,
        prompt: str,
        schema_name: str,
        schema: dict[str, Any],
        max_output_tokens: int | None = None,
    ) -> TextResult: ...


@runtime_checkable
class ImageProvider(Protocol):
    """Anything that turns a prompt into image bytes."""

    async def generate_image(
        self, *, model: str, prompt: str, size: str = "1024x1024"
    ) -> ImageResult: ...
