"""A site's WordPress connection: base URL, user and application password (DESIGN §8).

The password is write-only: it is encrypted at rest (domain/secrets.py, a key derived
from SECRET_KEY), never answered (responses say `has_password`), never logged, and a 422
about it never echoes it (api/errors.py drops `input`). A PUT may omit it to change the
address or user and keep the stored one. Changing any of the three forgets the last test
result, which no longer describes the connection.

The connection test calls `providers.wordpress.WordPressClient(...).check()` through the
`get_wordpress_checker` dependency, imported lazily so this module loads without the
client, and tests swap in a stub. The network call runs with no database transaction
open: a test may wait seconds, and on SQLite an open write transaction would hold the
write lock for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, SecretStr, field_validator
from sqlalchemy import Connection, Engine, Row, delete, insert, select, update

from api.deps import CurrentAccountId, EngineDep, SettingsDep
from api.errors import error_responses, unprocessable
from api.routes.calendar import site_or_404
from api.scoping import SiteIdPath
from domain import secrets
from models.db import utcnow
from models.runs import WordPressIntegration

logger = logging.getLogger("igny8.api.wordpress")

router = APIRouter(
    prefix="/sites/{site_id}/integrations/wordpress",
    tags=["integrations"],
    responses=error_responses(401, 404),
)

WP = WordPressIntegration.__table__
CHECK_TIMEOUT_S = 15.0  # the client's own timeout
CHECK_GRACE_S = 5.0  # beyond it, before the route stops waiting for the client
MAX_PASSWORD_LENGTH = 256


# ---- bodies ----------------------------------------------------------------------------
def _no_control_chars(value: str, name: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{name} must not contain control characters")
    return value


def check_base_url(value: str) -> str:
    """An http(s) address with a host and nothing that would leak or be ignored: no
    credentials (they belong in username/password, not in logs of URLs), no query, no
    fragment. Normalised as people paste it: https:// when no scheme is given, lower-case
    scheme and host, no trailing slash or /wp-json (as providers/wordpress.py reads it)."""
    value = _no_control_chars(value.strip(), "base_url")
    if any(ch.isspace() for ch in value):
        raise ValueError("base_url must not contain spaces")
    if "://" not in value and not value.lower().startswith(("http:", "https:")):
        value = f"https://{value}"
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("base_url must start with http:// or https://")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError(
            "base_url must not contain credentials: send username and application_password"
        )
    if not parts.hostname:
        raise ValueError("base_url needs a host name, e.g. https://example.com")
    if parts.fragment or "#" in value:
        raise ValueError("base_url must not have a #fragment")
    if parts.query or "?" in value:
        raise ValueError("base_url must not have a ?query")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("base_url has an invalid port") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    path = parts.path.rstrip("/")
    if path.lower().endswith("/wp-json"):
        path = path[: -len("/wp-json")]
    return f"{parts.scheme.lower()}://{netloc}{path}"


class WordPressIn(BaseModel):
    base_url: str = Field(
        min_length=1, max_length=500, description="The site's address, e.g. https://example.com"
    )
    username: str = Field(min_length=1, max_length=200)
    application_password: SecretStr | None = Field(
        default=None,
        description="A WordPress application password (Users → Profile); write-only. "
        "Required the first time; omit it to keep the stored one.",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        value = _no_control_chars(value.strip(), "username")
        if not value:
            raise ValueError("username must not be blank")
        if ":" in value:
            raise ValueError("username must not contain ':' (HTTP Basic cannot carry it)")
        return value

    @field_validator("application_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = _no_control_chars(value.get_secret_value().strip(), "application_password")
        if not text:
            raise ValueError("application_password must not be blank")
        if len(text) > MAX_PASSWORD_LENGTH:
            raise ValueError(
                f"application_password must be at most {MAX_PASSWORD_LENGTH} characters"
            )
        return SecretStr(text)


class WordPressPublic(BaseModel):
    """The connection as the API shows it: never the password."""

    site_id: int
    base_url: str
    username: str
    has_password: bool
    is_active: bool
    last_tested_at: datetime | None
    last_test_ok: bool | None
    created_at: datetime


class WordPressTestResult(BaseModel):
    ok: bool
    message: str
    code: str | None = None
    tested_at: datetime


# ---- the checker -----------------------------------------------------------------------
class WordPressCheckFailed(Exception):
    """The check's answer when WordPress refused or could not be reached."""

    def __init__(self, code: str | int | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WordPressChecksUnavailable(Exception):
    """No WordPress client is installed on this server."""


# (base_url, username, application password) → what was found (a sentence, or None for
# the plain "Connected" one); raises WordPressCheckFailed when WordPress refused.
WordPressChecker = Callable[[str, str, str], Awaitable[str | None]]


async def check_with_client(base_url: str, username: str, app_password: str) -> str | None:
    """The real check: providers/wordpress.py, imported on first use (module docstring)."""
    try:
        from providers.wordpress import WordPressClient, WordPressError
    except ImportError as exc:
        logger.error("WordPress client unavailable: %s", exc)
        raise WordPressChecksUnavailable() from None
    async with WordPressClient(base_url, username, app_password, CHECK_TIMEOUT_S) as client:
        try:
            site = await client.check()
        except WordPressError as exc:
            raise WordPressCheckFailed(exc.code, exc.message) from None
    return f"Connected to {site.name or base_url} as {site.user_name or username}"


async def get_wordpress_checker() -> WordPressChecker:
    return check_with_client


WordPressCheckerDep = Annotated[WordPressChecker, Depends(get_wordpress_checker)]

# What a failed check means when the client gave no message of its own, by its code
# (providers/wordpress.py WORDPRESS_ERROR_CODES; bare HTTP statuses are mapped to them).
_EXPLAINED: dict[str, str] = {
    "auth_error": "WordPress rejected the username or application password (401): use an "
    "Application Password (Users → Profile → Application Passwords), not the login password",
    "forbidden": "WordPress refused the user (403): it needs a role that can publish posts "
    "and upload files, and no security plugin or firewall may block the REST API",
    "not_found": "No WordPress REST API at this address (404): check base_url, and that "
    "the REST API (/wp-json/) is not disabled",
    "not_wordpress": "The address answers, but not as WordPress: check base_url",
    "unreachable": "WordPress is unreachable: check base_url, its DNS and that the server is up",
    "timeout": "WordPress did not answer in time",
    "tls_error": "The TLS connection failed: the certificate may be self-signed, expired "
    "or for another name",
    "redirected": "WordPress redirects to another address: use that address as base_url",
}
_HTTP_CODES = {"401": "auth_error", "403": "forbidden", "404": "not_found"}


def explain(code: str | int | None, detail: str) -> tuple[str, str]:
    """(code, message) for a failed check. The client writes its messages for the site
    owner (naming the user, the address and what to do), so its words are the message;
    ours stand in only when it gave none."""
    key = str(code).strip().lower() if code is not None else "failed"
    key = _HTTP_CODES.get(key, key) or "failed"
    message = detail.strip() or _EXPLAINED.get(key, f"The WordPress check failed ({key})")
    return key, message


# ---- routes ----------------------------------------------------------------------------
@router.put("", response_model=WordPressPublic, responses=error_responses(409))
def put_connection(
    site_id: SiteIdPath,
    body: WordPressIn,
    account_id: CurrentAccountId,
    engine: EngineDep,
    settings: SettingsDep,
) -> WordPressPublic:
    """Connect the site to WordPress, or change its connection."""
    token = None
    if body.application_password is not None:  # before the transaction: deriving takes time
        secret = settings.secret_key.get_secret_value()
        token = secrets.encrypt(body.application_password.get_secret_value(), secret)
    with engine.begin() as conn:
        site_or_404(conn, site_id, account_id)
        existing = conn.execute(select(WP).where(WP.c.site_id == site_id).with_for_update()).first()
        if existing is None and token is None:
            raise unprocessable(
                "application_password is required to connect a site",
                ("body", "application_password"),
            )
        values = _changes(existing, body.base_url, body.username, token)
        if existing is None:
            conn.execute(
                insert(WP).values(
                    account_id=account_id, site_id=site_id, created_at=utcnow(), **values
                )
            )
        elif values:
            conn.execute(update(WP).where(WP.c.id == existing.id).values(**values))
        return _public(_connection(conn, site_id))


def _changes(
    existing: Row[Any] | None, base_url: str, username: str, token: str | None
) -> dict[str, Any]:
    """The columns to write; a changed address, user or password resets the test result."""
    values: dict[str, Any] = {"base_url": base_url, "username": username, "is_active": True}
    if token is not None:
        values["password_encrypted"] = token
    changed = (
        existing is None
        or token is not None
        or (existing.base_url, existing.username) != (base_url, username)
    )
    if changed:
        values.update(last_tested_at=None, last_test_ok=None)
    return values


@router.get("", response_model=WordPressPublic)
def get_connection(
    site_id: SiteIdPath, account_id: CurrentAccountId, engine: EngineDep
) -> WordPressPublic:
    with engine.connect() as conn:
        site_or_404(conn, site_id, account_id)
        return _public(_connection(conn, site_id))


@router.delete("", status_code=204, response_class=Response)
def delete_connection(
    site_id: SiteIdPath, account_id: CurrentAccountId, engine: EngineDep
) -> Response:
    """Forget the connection, password included."""
    with engine.begin() as conn:
        site_or_404(conn, site_id, account_id)
        _connection(conn, site_id)
        conn.execute(delete(WP).where(WP.c.site_id == site_id))
    return Response(status_code=204)


@dataclass(frozen=True)
class _Stored:
    id: int
    base_url: str
    username: str
    token: str


@router.post("/test", response_model=WordPressTestResult, responses=error_responses(503))
async def test_connection(
    site_id: SiteIdPath,
    account_id: CurrentAccountId,
    engine: EngineDep,
    settings: SettingsDep,
    checker: WordPressCheckerDep,
) -> WordPressTestResult:
    """Log in to WordPress with the stored connection and say whether it works (200
    either way: `ok` and a message saying what to fix); the result is recorded."""
    stored = await run_in_threadpool(_stored, engine, site_id, account_id)
    secret = settings.secret_key.get_secret_value()
    try:
        password = await run_in_threadpool(secrets.decrypt, stored.token, secret)
    except secrets.SecretUnreadable as exc:
        code, message = "unreadable_password", str(exc)
    else:
        code, message = await _check(checker, stored, password)
    tested_at = utcnow()
    await run_in_threadpool(_record, engine, stored, code is None, tested_at)
    return WordPressTestResult(ok=code is None, code=code, message=message, tested_at=tested_at)


async def _check(checker: WordPressChecker, stored: _Stored, password: str) -> tuple[Any, str]:
    """(None, message) when WordPress accepted the login, else (code, message)."""
    try:
        with anyio.fail_after(CHECK_TIMEOUT_S + CHECK_GRACE_S):
            found = await checker(stored.base_url, stored.username, password)
    except WordPressChecksUnavailable:
        raise HTTPException(
            status_code=503, detail="WordPress checks are unavailable on this server"
        ) from None
    except TimeoutError:
        return explain("timeout", f"WordPress did not answer within {CHECK_TIMEOUT_S:g} s")
    except WordPressCheckFailed as exc:
        code, message = explain(exc.code, exc.message)
        if len(password) >= 8:  # never echo the password, should a client quote it
            message = message.replace(password, "***")
        return code, message
    return None, found or f"Connected to {stored.base_url} as {stored.username}"


def _stored(engine: Engine, site_id: int, account_id: int) -> _Stored:
    with engine.connect() as conn:
        site_or_404(conn, site_id, account_id)
        row = _connection(conn, site_id)
    return _Stored(row.id, row.base_url, row.username, row.password_encrypted)


def _record(engine: Engine, stored: _Stored, ok: bool, tested_at: datetime) -> None:
    """Record the result only if the connection is still the one tested (a PUT during
    the test would make it describe the wrong credentials)."""
    with engine.begin() as conn:
        conn.execute(
            update(WP)
            .where(
                WP.c.id == stored.id,
                WP.c.base_url == stored.base_url,
                WP.c.username == stored.username,
                WP.c.password_encrypted == stored.token,
            )
            .values(last_tested_at=tested_at, last_test_ok=ok)
        )


def _connection(conn: Connection, site_id: int) -> Row[Any]:
    row = conn.execute(select(WP).where(WP.c.site_id == site_id)).first()
    if row is None:
        raise HTTPException(status_code=404, detail=f"Site {site_id} has no WordPress connection")
    return row


def _public(row: Row[Any]) -> WordPressPublic:
    return WordPressPublic(
        site_id=row.site_id,
        base_url=row.base_url,
        username=row.username,
        has_password=bool(row.password_encrypted),
        is_active=row.is_active,
        last_tested_at=row.last_tested_at,
        last_test_ok=row.last_test_ok,
        created_at=row.created_at,
    )
