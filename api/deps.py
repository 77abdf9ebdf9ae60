"""Request dependencies, as `Annotated` aliases so routes stay short and tests can swap
any of them through `app.dependency_overrides[get_x] = ...`.

Everything long-lived (settings, engine, ledger, Temporal client, media store) lives on
`app.state`, set up by the lifespan in `api.main`; nothing here does I/O at import.

The event loop never waits on the database or the media store, one rule for every router:
a route or dependency that touches them is a plain `def` (FastAPI runs it in its thread
pool); `async def` is only for code that awaits (Temporal, the request body) or does no
I/O at all (the accessors below: no thread hop for nothing), and an async route runs each
block of database work in one `await run_in_threadpool(...)`. Why: one blocking call on
the loop stalls every request; while a POST waited on SQLite's write lock, GET
/openapi.json took 3.1 s instead of 0.13 s (tests/test_api_blocking.py guards this).
Measured (2 CPUs, 32 clients, auth + balance read): sync `def` and async with
`run_in_threadpool` are equal within noise (250-315 req/s; 130-180 req/s when each query
waits 20 ms more); the same work on the loop matches them at 0 ms but falls to 40 req/s at
20 ms and holds a request that needs no database for 1.5 s. No async engine: it needs
greenlet and an async twin of the ledger and domain code that the worker shares.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import Client

from api.dashboard.session import cookie_account
from api.errors import TemporalUnavailable
from api.work_items import TitleCache
from core.settings import Settings
from domain.accounts import authenticate
from domain.ledger import Ledger
from providers.media_store import MediaStore

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


async def get_settings_dep(request: Request) -> Settings:
    settings = _state(request, "settings")
    assert isinstance(settings, Settings)
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_engine(request: Request) -> Engine:
    engine = _state(request, "engine")
    assert isinstance(engine, Engine)
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def get_session(engine: EngineDep) -> Iterator[Session]:
    """One session per request; routes commit what they change, the rest rolls back."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_ledger(request: Request, engine: EngineDep, settings: SettingsDep) -> Ledger:
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


async def require_temporal(client: TemporalDep) -> Client:
    """For routes that cannot work without Temporal: a 503 instead of a None to check."""
    if client is None:
        raise TemporalUnavailable()
    return client


TemporalClientDep = Annotated[Client, Depends(require_temporal)]


def get_titles(request: Request) -> TitleCache:
    """The app's cache of item titles for live progress (api/work_items.py)."""
    titles = _state(request, "titles")
    assert isinstance(titles, TitleCache)
    return titles


TitlesDep = Annotated[TitleCache, Depends(get_titles)]


async def get_media_store(request: Request) -> MediaStore:
    """Where generated images live; its methods block, so call them from a thread."""
    store = _state(request, "media_store")
    assert isinstance(store, MediaStore)
    return store


MediaStoreDep = Annotated[MediaStore, Depends(get_media_store)]

# anyio's default; every blocking route and dependency shares these threads.
DEFAULT_THREAD_TOKENS = 40


def thread_tokens(settings: Settings) -> int:
    """Threads for blocking work: as many as the API's PostgreSQL connections (pool plus
    overflow, 2 x db_pool_size in `make_engine`), at least anyio's 40. Fewer would leave
    connections idle while requests queue for a thread; more would only add threads that
    wait for a connection. (SQLite's default pool holds 15: the other threads wait for a
    connection or the write lock, in a thread, never on the loop.)"""
    return max(DEFAULT_THREAD_TOKENS, 2 * settings.db_pool_size)


def set_thread_limit(settings: Settings) -> None:
    """Size the running event loop's thread limiter (call it from the lifespan)."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = thread_tokens(settings)


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
    settings: SettingsDep,
    _doc: Annotated[object, Depends(_account_scheme)],
) -> int:
    """The id of the account whose active key signed the request (a `def`: it reads the
    database, so FastAPI runs it in the thread pool). Without an Authorization header,
    the dashboard's signed session cookie signs it instead (same-origin browser calls;
    unsafe methods need its CSRF token: api/dashboard/session.py)."""
    if "authorization" not in request.headers:
        cookie_id = cookie_account(request, engine, settings)
        if cookie_id is not None:
            return cookie_id
    account_id = authenticate(engine, bearer_token(request))
    if account_id is None:
        raise _unauthorized(INVALID_KEY)
    return account_id


CurrentAccountId = Annotated[int, Depends(current_account)]


async def require_admin(
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
