"""Every error leaves the API as JSON `{"detail": ...}` with an honest status code.

Why one place: domain code raises domain exceptions (ledger, pricing, Temporal) and must
not know about HTTP; routes stay free of try/except boilerplate; and a bug can never leak
a stack trace, because anything unmapped becomes a logged, generic 500.

Every 422 carries FastAPI's list format, `[{"loc": [...], "msg": "...", "type": "..."}]`,
whether pydantic or a route found the problem, so clients parse one shape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import fastapi.routing
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.schemas import ErrorMessage
from domain.ledger import (
    AccountNotFound,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    LedgerError,
)
from domain.pricing import ModelUnavailable

logger = logging.getLogger("igny8.api")

TEMPORAL_UNAVAILABLE = "Temporal is unavailable"

# Exceptions whose message is already written for users, and their status.
MESSAGE_ERRORS: dict[type[Exception], int] = {
    InsufficientCredits: 402,
    IdempotencyConflict: 409,
    AccountNotFound: 404,
    HoldNotFound: 404,
    LedgerError: 400,
    ValueError: 400,
}


ERROR_DESCRIPTIONS = {
    400: "Refused by a business rule",
    401: "Missing, malformed, unknown or inactive key",
    402: "Not enough available credits",
    404: "Not found (another account's objects are not found either)",
    409: "Conflicts with existing data or a running workflow",
    415: "Unsupported Content-Type",
    503: "Temporal or the database is unavailable; retry later",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error codes a route or router can answer."""
    return {
        code: {"model": ErrorMessage, "description": ERROR_DESCRIPTIONS[code]} for code in codes
    }


# FastAPI itself answers this 400, before any route code runs, when it cannot read a body:
# bytes that are not valid UTF-8, or JSON nested deeper than the parser goes (a form body
# that cannot be parsed too). Malformed JSON text is a 422 `json_invalid` instead.
UNDECODABLE_BODY = "There was an error parsing the body"
UNDECODABLE_BODY_DESCRIPTION = (
    "The body cannot be decoded: not valid UTF-8, or JSON nested too deeply "
    "(malformed JSON is a 422 `json_invalid`)"
)
ERROR_SCHEMA_REF = f"#/components/schemas/{ErrorMessage.__name__}"


def document_undecodable_bodies(app: FastAPI, openapi: dict[str, Any]) -> None:
    """Add the 400 for an undecodable body to every operation whose body FastAPI reads.

    Why here: FastAPI raises that 400 itself, so no route's `responses=` can know of it,
    and routes that read their body by hand (keyword import) answer 422 instead."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault(ErrorMessage.__name__, ErrorMessage.model_json_schema())
    paths = openapi.get("paths", {})
    for route in _api_routes(app):
        if route.body_field is None:
            continue
        for method in sorted(route.methods):
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is not None:
                operation["responses"] = _with_undecodable_400(operation.get("responses", {}))


def _api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route, with its full path and methods. Newer FastAPI includes routers
    lazily: `app.routes` then holds the included routers, which `iter_route_contexts`
    expands; older FastAPI put the routes themselves there."""
    expand = getattr(fastapi.routing, "iter_route_contexts", None)
    for route in expand(app.routes) if expand else app.routes:
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


def _with_undecodable_400(responses: dict[str, Any]) -> dict[str, Any]:
    """`responses` with the 400 listed (or its description extended), in status order."""
    given = responses.get("400")
    if given is None:
        responses["400"] = {
            "description": UNDECODABLE_BODY_DESCRIPTION,
            "content": {
                "application/json": {
                    "schema": {"$ref": ERROR_SCHEMA_REF},
                    "example": {"detail": UNDECODABLE_BODY},
                }
            },
        }
    elif UNDECODABLE_BODY_DESCRIPTION not in given.get("description", ""):
        also = UNDECODABLE_BODY_DESCRIPTION[0].lower() + UNDECODABLE_BODY_DESCRIPTION[1:]
        given["description"] = f"{given.get('description', '')}; or {also}"
    return dict(sorted(responses.items()))


class TemporalUnavailable(Exception):
    """Raised by routes that need Temporal when no client is connected (→ 503)."""

    def __init__(self, message: str = TEMPORAL_UNAVAILABLE) -> None:
        super().__init__(message)


def error_item(msg: str, loc: Sequence[str | int] = (), type_: str = "value_error") -> dict:
    """One entry of a 422 detail list, the shape FastAPI uses for validation errors."""
    return {"loc": list(loc), "msg": msg, "type": type_}


def unprocessable(
    msg: str, loc: Sequence[str | int] = (), type_: str = "value_error"
) -> HTTPException:
    """A 422 for a problem only the route can see (an unknown model, a foreign sector)."""
    return HTTPException(status_code=422, detail=[error_item(msg, loc, type_)])


def unprocessable_all(errors: list[dict[str, Any]]) -> HTTPException:
    """A 422 listing several problems at once (each made with `error_item`)."""
    return HTTPException(status_code=422, detail=errors)


def reject_nulls(
    changes: Mapping[str, Any], nullable: Iterable[str] = (), loc: Sequence[str] = ("body",)
) -> None:
    """PATCH bodies may omit a field but not null a NOT NULL column (that would be a 500)."""
    allowed = set(nullable)
    bad = [name for name, value in changes.items() if value is None and name not in allowed]
    if bad:
        raise unprocessable_all(
            [error_item("may not be null", [*loc, name], "null_not_allowed") for name in bad]
        )


def readable_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's error list without `input`/`ctx` (they can hold bytes or whole files)."""
    return [
        error_item(_readable_message(err), err.get("loc", ()), err.get("type", "value_error"))
        for err in errors
    ]


def _readable_message(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "Invalid value")).removeprefix("Value error, ")
    ctx_error = (err.get("ctx") or {}).get("error")
    if err.get("type") == "json_invalid" and ctx_error:
        msg = f"{msg}: {ctx_error}"
    return msg


def _json(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _json(422, readable_errors(exc.errors()))


async def _pydantic_validation(_: Request, exc: Exception) -> JSONResponse:
    """A model built from user data inside a route: still the user's input, so 422."""
    assert isinstance(exc, ValidationError)
    return _json(422, readable_errors(exc.errors(include_url=False)))


async def _model_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return _json(422, [error_item(str(exc), (), "model_unavailable")])


def _message_handler(status: int) -> Any:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return _json(status, str(exc))

    return handler


async def _rpc_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    if exc.status == RPCStatusCode.NOT_FOUND:
        return _json(404, f"Not found: {exc.message}")
    if exc.status == RPCStatusCode.ALREADY_EXISTS:
        return _json(409, f"Already exists: {exc.message}")
    logger.warning("Temporal RPC failed (%s): %s", exc.status.name, exc.message)
    return _json(503, TEMPORAL_UNAVAILABLE, {"Retry-After": "5"})


async def _already_started(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WorkflowAlreadyStartedError)
    return _json(409, f"Workflow '{exc.workflow_id}' is already running")


async def _temporal_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return _json(503, str(exc), {"Retry-After": "5"})


async def _integrity(_: Request, exc: Exception) -> JSONResponse:
    """A unique or foreign key violation that a route did not foresee (usually a race)."""
    logger.warning("Integrity error: %s", exc)
    return _json(409, "The change conflicts with existing data; reload and retry")


async def _data_error(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("Database rejected a value: %s", exc)
    msg = "The database refused a value: out of range, too long, or containing a NUL character"
    return _json(422, [error_item(msg, (), "invalid_value")])


async def _overflow(_: Request, exc: Exception) -> JSONResponse:
    return _json(422, [error_item("A number is too large", (), "out_of_range")])


async def _database_down(_: Request, exc: Exception) -> JSONResponse:
    logger.error("Database error: %s", exc)
    return _json(503, "The database is unavailable", {"Retry-After": "5"})


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, "Internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping; Starlette picks the most specific class in the MRO."""
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _pydantic_validation)
    app.add_exception_handler(ModelUnavailable, _model_unavailable)
    for exc_type, status in MESSAGE_ERRORS.items():
        app.add_exception_handler(exc_type, _message_handler(status))
    app.add_exception_handler(RPCError, _rpc_error)
    app.add_exception_handler(WorkflowAlreadyStartedError, _already_started)
    app.add_exception_handler(TemporalUnavailable, _temporal_unavailable)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(OverflowError, _overflow)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(Exception, _unhandled)
