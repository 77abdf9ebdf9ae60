"""The dashboard's session: a signed cookie (itsdangerous, keyed by SECRET_KEY) that
names the account, the API key it signed in with, a CSRF token and the chosen site.

Why this shape:
- The cookie holds no API key, only the key's row id: a stolen cookie cannot be turned
  into a key, and revoking the key (or deactivating the account) ends the session at its
  next request, because every request checks that the key is still active.
- `HttpOnly` (scripts cannot read it), `SameSite=Lax` (other sites' forms and fetches do
  not carry it), `Secure` when served over https, and a timestamp checked against
  `MAX_AGE_S`.
- Unsafe requests (POST, PUT, PATCH, DELETE) that authenticate by the cookie must carry
  the session's CSRF token, in the `X-CSRF-Token` header (the dashboard's fetch calls) or
  a `csrf_token` form field (its plain forms). Another site can make a browser send the
  cookie (a top-level form POST under Lax), never read the token.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, replace
from typing import Any

from fastapi import HTTPException, Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Engine, select

from core.settings import Settings
from domain.accounts import hash_key
from models.accounts import Account, ApiKey

COOKIE = "igny8_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
MAX_AGE_S = 7 * 24 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FAILED = "CSRF token missing or invalid: reload the page and try again"
_SALT = "igny8.dashboard.session"

KEYS = ApiKey.__table__
ACCOUNTS = Account.__table__


@dataclass(frozen=True)
class DashboardSession:
    account_id: int
    key_id: int
    csrf: str
    site_id: int | None = None

    def with_site(self, site_id: int | None) -> DashboardSession:
        return replace(self, site_id=site_id)


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key.get_secret_value(), salt=_SALT)


def encode(settings: Settings, session: DashboardSession) -> str:
    data = {"a": session.account_id, "k": session.key_id, "c": session.csrf, "s": session.site_id}
    return _serializer(settings).dumps(data)


def decode(settings: Settings, value: str) -> DashboardSession | None:
    """The session a cookie value carries, or None if it is forged, stale or malformed."""
    try:
        data: Any = _serializer(settings).loads(value, max_age=MAX_AGE_S)
        site = data.get("s")
        return DashboardSession(
            int(data["a"]), int(data["k"]), str(data["c"]), int(site) if site else None
        )
    except (BadSignature, KeyError, TypeError, ValueError, AttributeError):
        return None


def sign_in(engine: Engine, api_key: str) -> DashboardSession | None:
    """A new session for an active key of an active account, else None."""
    with engine.connect() as conn:
        row = conn.execute(
            select(KEYS.c.id, KEYS.c.account_id)
            .join(ACCOUNTS, ACCOUNTS.c.id == KEYS.c.account_id)
            .where(
                KEYS.c.key_hash == hash_key(api_key.strip()),
                KEYS.c.is_active.is_(True),
                ACCOUNTS.c.is_active.is_(True),
            )
        ).first()
    if row is None:
        return None
    return DashboardSession(row.account_id, row.id, secrets.token_urlsafe(24))


def still_valid(engine: Engine, session: DashboardSession) -> bool:
    """The key the session signed in with is still active, on an active account."""
    with engine.connect() as conn:
        found = conn.execute(
            select(KEYS.c.id)
            .join(ACCOUNTS, ACCOUNTS.c.id == KEYS.c.account_id)
            .where(
                KEYS.c.id == session.key_id,
                KEYS.c.account_id == session.account_id,
                KEYS.c.is_active.is_(True),
                ACCOUNTS.c.is_active.is_(True),
            )
        ).first()
    return found is not None


def from_request(request: Request, engine: Engine, settings: Settings) -> DashboardSession | None:
    """The request's valid session, or None (no cookie, a bad one, or a revoked key).
    Memoised on the request: the page and the API dependency ask once between them."""
    cached = getattr(request.state, "dashboard_session", False)
    if cached is not False:
        return cached
    value = request.cookies.get(COOKIE)
    session = decode(settings, value) if value else None
    if session is not None and not still_valid(engine, session):
        session = None
    request.state.dashboard_session = session
    return session


def csrf_ok(session: DashboardSession, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())


def cookie_account(request: Request, engine: Engine, settings: Settings) -> int | None:
    """For the JSON API: the account of a request signed in by the dashboard cookie, or
    None when there is no valid session. An unsafe method without the session's CSRF
    token in `X-CSRF-Token` is a 403."""
    session = from_request(request, engine, settings)
    if session is None:
        return None
    if request.method not in SAFE_METHODS and not csrf_ok(
        session, request.headers.get(CSRF_HEADER)
    ):
        raise HTTPException(status_code=403, detail=CSRF_FAILED)
    return session.account_id


def set_cookie(
    response: Response, request: Request, settings: Settings, session: DashboardSession
) -> None:
    response.set_cookie(
        COOKIE,
        encode(settings, session),
        max_age=MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="lax", secure=request.url.scheme == "https"
    )
