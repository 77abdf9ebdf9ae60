"""Request dependencies, as `Annotated` aliases so routes stay short and tests can swap
any of them through `app.dependency_overrides[get_x] = ...`.

Everything long-lived (settings, engine, ledger, Temporal client) lives on `app.state`,
set up by the lifespan in `api.main`; nothing here does I/O at import.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import Client

from api.errors import TemporalUnavailable
from core.settings import Settings
from domain.accounts import authenticate
from domain.ledger import Ledger

# Only for the OpenAPI "Authorize" button; the header is parsed below with our messages.
_account_scheme = HTTPBearer(
    auto_error=False, scheme_name="ApiKey", description="An account's API key"
)
_admin_scheme = HTTPBearer(
    auto_error=False, scheme_name="AdminKey", description="The admin key from settings"
)

MISSING_KEY = "Missing API key: send the header 'Authorization: Bearer <api key>'"
MALFORMED_KEY = "Malformed Authorization header: expected 'Bearer <api key>'"
INVALID_KEY = "Invalid or inactive API key"
INVALID_ADMIN_KEY = "Invalid admin key"


def _state(request: Request, name: str) -> object:
    value = getattr(request.app.state, name, None)
    if value is None:
        raise RuntimeError(f"app.state.{name} is not set: the app's lifespan has not run")
    return value


def get_settings_dep(request: Request) -> Settings:
    settings = _state(request, "settings")
    assert isinstance(settings, Settings)
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_engine(request: Request) -> Engine:
    engine = _state(request, "engine")
    assert isinstance(engine, Engine)
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def get_session(engine: EngineDep) -> Iterator[Session]:
    """One session per request; routes commit what they change, the rest rolls back."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_ledger(request: Request, engine: EngineDep, settings: SettingsDep) -> Ledger:
    """The app's ledger, or one on the overridden engine so overrides stay consistent."""
    ledger = getattr(request.app.state, "ledger", None)
    if isinstance(ledger, Ledger) and ledger.engine is engine:
        return ledger
    return Ledger(engine, hold_ttl_seconds=settings.hold_ttl_seconds)


LedgerDep = Annotated[Ledger, Depends(get_ledger)]


async def get_temporal(request: Request) -> Client | None:
    """The Temporal client, or None while Temporal is unreachable (retried lazily)."""
    connector = getattr(request.app.state, "temporal_connector", None)
    if connector is not None:
        request.app.state.temporal = await connector.get()
    return getattr(request.app.state, "temporal", None)


TemporalDep = Annotated[Client | None, Depends(get_temporal)]


def require_temporal(client: TemporalDep) -> Client:
    """For routes that cannot work without Temporal: a 503 instead of a None to check."""
    if client is None:
        raise TemporalUnavailable()
    return client


TemporalClientDep = Annotated[Client, Depends(require_temporal)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def bearer_token(request: Request) -> str:
    """The token of `Authorization: Bearer <token>`, or a 401 saying what is wrong."""
    header = request.headers.get("authorization")
    if not header or not header.strip():
        raise _unauthorized(MISSING_KEY)
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise _unauthorized(MALFORMED_KEY)
    return token


def current_account(
    request: Request,
    engine: EngineDep,
    _doc: Annotated[object, Depends(_account_scheme)],
) -> int:
    """The id of the account whose active key signed the request."""
    account_id = authenticate(engine, bearer_token(request))
    if account_id is None:
        raise _unauthorized(INVALID_KEY)
    return account_id


CurrentAccountId = Annotated[int, Depends(current_account)]


def require_admin(
    request: Request,
    settings: SettingsDep,
    _doc: Annotated[object, Depends(_admin_scheme)],
) -> None:
    """Admin routes: the settings' admin key, compared in constant time (bytes, so any
    header text compares instead of raising)."""
    token = bearer_token(request)
    expected = settings.admin_api_key.get_secret_value()
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise _unauthorized(INVALID_ADMIN_KEY)


AdminDep = Annotated[None, Depends(require_admin)]
