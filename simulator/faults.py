"""Failures the simulator can answer with, rendered the way each real API renders them.

One Fault value is rendered as OpenAI's `{"error": {...}}` or Runware's `{"errors": [...]}`
so the clients' error classification is exercised against realistic bodies and headers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

POLICY_MESSAGE = "Your request was rejected as a result of our safety system."


@dataclass(frozen=True)
class Fault:
    """An error answer: HTTP status, OpenAI code/type, Runware code, message, headers."""

    status: int
    code: str | None
    type: str
    message: str
    runware_code: str
    headers: dict[str, str] = field(default_factory=dict)
    param: str | None = None

    def openai_response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)

    def runware_response(self, task_uuid: str | None = None) -> JSONResponse:
        error: dict[str, Any] = {"code": self.runware_code, "message": self.message}
        if self.param:
            error["parameter"] = self.param
        if task_uuid:
            error["taskType"] = "imageInference"
            error["taskUUID"] = task_uuid
        return JSONResponse({"errors": [error]}, status_code=self.status, headers=self.headers)


def retry_headers(seconds: float) -> dict[str, str]:
    """Retry-After in whole seconds (HTTP), plus the exact value in retry-after-ms."""
    return {
        "Retry-After": str(max(0, math.ceil(seconds))),
        "retry-after-ms": str(max(0, round(seconds * 1000))),
    }


def auth_fault() -> Fault:
    return Fault(
        401,
        "invalid_api_key",
        "invalid_request_error",
        "Incorrect API key provided. You can find your API key in your account settings.",
        "invalidApiKey",
    )


def quota_fault() -> Fault:
    return Fault(
        429,
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficientCredits",
    )


def rate_limit_fault(retry_after_s: float, reason: str) -> Fault:
    return Fault(
        429,
        "rate_limit_exceeded",
        "requests",
        f"Rate limit reached ({reason}). Please try again in {retry_after_s:g}s.",
        "rateLimitExceeded",
        headers=retry_headers(retry_after_s),
    )


def server_fault() -> Fault:
    return Fault(
        500,
        "server_error",
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
        "internalServerError",
    )


def policy_fault() -> Fault:
    return Fault(
        400,
        "content_policy_violation",
        "invalid_request_error",
        POLICY_MESSAGE,
        "contentPolicyViolation",
    )


def invalid(message: str, param: str | None = None, code: str | None = "invalid_value") -> Fault:
    return Fault(400, code, "invalid_request_error", message, "invalidParameter", param=param)


def not_found(method: str, path: str) -> Fault:
    return Fault(404, None, "invalid_request_error", f"Invalid URL ({method} {path})", "notFound")


def method_not_allowed(method: str, path: str, status: int = 405) -> Fault:
    return Fault(
        status, None, "invalid_request_error", f"{method} is not allowed on {path}", "notAllowed"
    )
