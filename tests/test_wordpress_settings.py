"""A site's WordPress connection on SQLite and PostgreSQL: the password is write-only and
encrypted at rest, the address is validated, the connection test answers what to fix and
is recorded, and another account's site is not found. The test route runs against a stub
checker injected through `get_wordpress_checker`, so no WordPress client is needed."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from api.main import create_app
from api.routes import wordpress
from api.routes.wordpress import WordPressCheckFailed, get_wordpress_checker
from core.settings import Settings
from domain import secrets
from models import WordPressIntegration
from tests import builders

API = "/api/v1"
SECRET = "test-secret-key-for-wordpress-settings"
PASSWORD = "abcd EFGH ijkl MNOP qrst UVWX"
WP = WordPressIntegration.__table__


class StubChecker:
    """Records what it was asked and answers as told: None, or a failure (code, message)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.failure: tuple[Any, str] | None = None
        self.delay_s = 0.0

    async def __call__(self, base_url: str, username: str, app_password: str) -> str | None:
        self.calls.append((base_url, username, app_password))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.failure is not None:
            raise WordPressCheckFailed(*self.failure)
        return None


@pytest.fixture
def app(db_url: str, engine: Engine) -> FastAPI:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=db_url,
        admin_api_key="test-admin",
        secret_key=SECRET,
    )
    return create_app(settings, connect_temporal=False)


@pytest.fixture
def checker(app: FastAPI) -> StubChecker:
    stub = StubChecker()
    app.dependency_overrides[get_wordpress_checker] = lambda: stub
    return stub


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def owner(engine: Engine) -> tuple[int, str, int]:
    """(account id, api key, site id)."""
    account_id, key = builders.account(engine)
    return account_id, key, builders.site(engine, account_id).id


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def url(site_id: int, tail: str = "") -> str:
    return f"{API}/sites/{site_id}/integrations/wordpress{tail}"


def connect(client: TestClient, key: str, site_id: int, **fields: Any) -> Any:
    body = {
        "base_url": "https://blog.example.com",
        "username": "editor",
        "application_password": PASSWORD,
        **fields,
    }
    return client.put(url(site_id), json=body, headers=auth(key))


def stored(engine: Engine, site_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(WP).where(WP.c.site_id == site_id)).one()


# ---- storing -------------------------------------------------------------------------
def test_the_password_is_write_only_and_encrypted_at_rest(
    client: TestClient, engine: Engine, owner: tuple[int, str, int], caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    _, key, site_id = owner

    put = connect(client, key, site_id)
    got = client.get(url(site_id), headers=auth(key))

    assert put.status_code == 200, put.text
    assert put.json() == got.json()
    assert got.json() == {
        "site_id": site_id,
        "base_url": "https://blog.example.com",
        "username": "editor",
        "has_password": True,
        "is_active": True,
        "last_tested_at": None,
        "last_test_ok": None,
        "created_at": got.json()["created_at"],
    }
    for response in (put, got):
        assert PASSWORD not in response.text
        assert "application_password" not in response.text
    column = stored(engine, site_id).password_encrypted
    assert PASSWORD not in column and PASSWORD.replace(" ", "") not in column
    assert secrets.decrypt(column, SECRET) == PASSWORD
    assert PASSWORD not in caplog.text


def test_a_put_without_a_password_keeps_the_stored_one(
    client: TestClient, engine: Engine, owner: tuple[int, str, int], checker: StubChecker
) -> None:
    _, key, site_id = owner
    first = connect(client, key, site_id)
    assert first.status_code == 200, first.text
    token = stored(engine, site_id).password_encrypted
    assert client.post(url(site_id, "/test"), headers=auth(key)).json()["ok"] is True

    moved = client.put(
        url(site_id),
        json={"base_url": "https://new.example.com/blog/", "username": "writer"},
        headers=auth(key),
    )

    assert moved.status_code == 200, moved.text
    assert moved.json()["base_url"] == "https://new.example.com/blog"
    assert (moved.json()["last_test_ok"], moved.json()["last_tested_at"]) == (None, None)
    assert stored(engine, site_id).password_encrypted == token


def test_the_first_put_needs_a_password(client: TestClient, owner: tuple[int, str, int]) -> None:
    _, key, site_id = owner

    response = client.put(
        url(site_id),
        json={"base_url": "https://blog.example.com", "username": "editor"},
        headers=auth(key),
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "application_password"]
    assert client.get(url(site_id), headers=auth(key)).status_code == 404


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("ftp://blog.example.com", "must start with http:// or https://"),
        ("javascript:alert(1)", "invalid port"),
        ("https://editor:hunter22@blog.example.com", "must not contain credentials"),
        ("https://editor@blog.example.com", "must not contain credentials"),
        ("https://blog.example.com/#top", "must not have a #fragment"),
        ("https://blog.example.com/?p=1", "must not have a ?query"),
        ("https://", "needs a host name"),
        ("https://blog.example.com:99999", "invalid port"),
        ("https://blog example.com", "must not contain spaces"),
    ],
)
def test_bad_addresses_are_422_and_never_echo_secrets(
    client: TestClient, owner: tuple[int, str, int], base_url: str, message: str
) -> None:
    _, key, site_id = owner

    response = connect(client, key, site_id, base_url=base_url)

    assert response.status_code == 422, response.text
    assert message in response.json()["detail"][0]["msg"]
    assert PASSWORD not in response.text and "hunter22" not in response.text


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("  HTTPS://Blog.Example.COM:8443/wp/  ", "https://blog.example.com:8443/wp"),
        ("blog.example.com", "https://blog.example.com"),
        ("http://blog.example.com/wp-json/", "http://blog.example.com"),
    ],
)
def test_the_address_is_normalised(
    client: TestClient, owner: tuple[int, str, int], given: str, kept: str
) -> None:
    _, key, site_id = owner

    response = connect(client, key, site_id, base_url=given)

    assert response.status_code == 200, response.text
    assert response.json()["base_url"] == kept


@pytest.mark.parametrize(
    "fields",
    [
        {"username": "   "},
        {"username": "a:b"},
        {"application_password": "   "},
        {"application_password": "x" * 257},
        {"application_password": "line\nbreak"},
    ],
)
def test_bad_users_and_passwords_are_422(
    client: TestClient, owner: tuple[int, str, int], fields: dict[str, str]
) -> None:
    _, key, site_id = owner

    response = connect(client, key, site_id, **fields)

    assert response.status_code == 422, response.text
    assert "x" * 257 not in response.text and "line\nbreak" not in response.text


def test_delete_forgets_the_connection(
    client: TestClient, engine: Engine, owner: tuple[int, str, int]
) -> None:
    _, key, site_id = owner
    connect(client, key, site_id)

    assert client.delete(url(site_id), headers=auth(key)).status_code == 204

    assert client.get(url(site_id), headers=auth(key)).status_code == 404
    assert client.delete(url(site_id), headers=auth(key)).status_code == 404


# ---- testing the connection ----------------------------------------------------------
def test_a_working_connection_is_tested_with_the_decrypted_password_and_recorded(
    client: TestClient, engine: Engine, owner: tuple[int, str, int], checker: StubChecker
) -> None:
    _, key, site_id = owner
    connect(client, key, site_id)

    response = client.post(url(site_id, "/test"), headers=auth(key))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and body["code"] is None
    assert body["message"] == "Connected to https://blog.example.com as editor"
    assert checker.calls == [("https://blog.example.com", "editor", PASSWORD)]
    assert PASSWORD not in response.text
    row = stored(engine, site_id)
    assert row.last_test_ok is True and row.last_tested_at is not None
    shown = client.get(url(site_id), headers=auth(key)).json()
    assert shown["last_test_ok"] is True and shown["last_tested_at"] is not None


@pytest.mark.parametrize(
    ("code", "expected_code", "phrase"),
    [
        ("auth_error", "auth_error", "rejected the username or application password (401)"),
        (401, "auth_error", "rejected the username or application password (401)"),
        ("forbidden", "forbidden", "refused the user (403)"),
        (404, "not_found", "No WordPress REST API at this address (404)"),
        ("not_wordpress", "not_wordpress", "not as WordPress"),
        ("unreachable", "unreachable", "WordPress is unreachable"),
        ("weird", "weird", "The WordPress check failed (weird)"),
    ],
)
def test_a_failing_connection_says_what_to_fix(
    client: TestClient,
    engine: Engine,
    owner: tuple[int, str, int],
    checker: StubChecker,
    code: Any,
    expected_code: str,
    phrase: str,
) -> None:
    _, key, site_id = owner
    connect(client, key, site_id)
    checker.failure = (code, "")

    response = client.post(url(site_id, "/test"), headers=auth(key))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is False and body["code"] == expected_code
    assert phrase in body["message"]
    assert stored(engine, site_id).last_test_ok is False


def test_the_clients_own_message_is_shown_without_the_password(
    client: TestClient, owner: tuple[int, str, int], checker: StubChecker
) -> None:
    _, key, site_id = owner
    connect(client, key, site_id)
    checker.failure = ("auth_error", f"WordPress said no to user 'editor' ({PASSWORD})")

    body = client.post(url(site_id, "/test"), headers=auth(key)).json()

    assert body["message"] == "WordPress said no to user 'editor' (***)"


def test_a_check_that_hangs_times_out(
    client: TestClient,
    owner: tuple[int, str, int],
    checker: StubChecker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, key, site_id = owner
    connect(client, key, site_id)
    monkeypatch.setattr(wordpress, "CHECK_TIMEOUT_S", 0.05)
    monkeypatch.setattr(wordpress, "CHECK_GRACE_S", 0.05)
    checker.delay_s = 5

    body = client.post(url(site_id, "/test"), headers=auth(key)).json()

    assert (body["ok"], body["code"]) == (False, "timeout")
    assert body["message"] == "WordPress did not answer within 0.05 s"


def test_a_password_this_secret_cannot_open_fails_the_test_clearly(
    client: TestClient, engine: Engine, owner: tuple[int, str, int], checker: StubChecker
) -> None:
    _, key, site_id = owner
    connect(client, key, site_id)
    other_key_token = secrets.encrypt(PASSWORD, "another-secret-key")
    with engine.begin() as conn:
        conn.execute(update(WP).values(password_encrypted=other_key_token))

    body = client.post(url(site_id, "/test"), headers=auth(key)).json()

    assert (body["ok"], body["code"]) == (False, "unreadable_password")
    assert "SECRET_KEY changed" in body["message"]
    assert checker.calls == []


def test_testing_with_no_connection_is_404(
    client: TestClient, owner: tuple[int, str, int], checker: StubChecker
) -> None:
    _, key, site_id = owner

    response = client.post(url(site_id, "/test"), headers=auth(key))

    assert response.status_code == 404
    assert response.json()["detail"] == f"Site {site_id} has no WordPress connection"


def test_without_a_wordpress_client_the_test_is_503(
    client: TestClient, owner: tuple[int, str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key, site_id = owner
    connect(client, key, site_id)
    monkeypatch.setitem(sys.modules, "providers.wordpress", None)  # import fails

    response = client.post(url(site_id, "/test"), headers=auth(key))

    assert response.status_code == 503
    assert response.json()["detail"] == "WordPress checks are unavailable on this server"


def test_the_real_client_against_a_fake_wordpress(
    client: TestClient, engine: Engine, owner: tuple[int, str, int]
) -> None:
    """No stub: the route's own checker, providers/wordpress.py, over HTTP."""
    fakes = pytest.importorskip("tests.fake_wordpress")
    _, key, site_id = owner
    with fakes.FakeWordPress() as fake:
        login = {"username": fakes.DEFAULT_USER, "base_url": fake.url}
        connect(client, key, site_id, application_password=fakes.DEFAULT_APP_PASSWORD, **login)
        works = client.post(url(site_id, "/test"), headers=auth(key)).json()
        connect(client, key, site_id, application_password="wrong pass word", **login)
        refused = client.post(url(site_id, "/test"), headers=auth(key)).json()
    gone = client.post(url(site_id, "/test"), headers=auth(key)).json()

    assert works["ok"] is True, works
    assert works["message"] == f"Connected to Fake WordPress as {fakes.DEFAULT_USER}"
    assert (refused["ok"], refused["code"]) == (False, "auth_error")
    assert "Application Password" in refused["message"]
    assert (gone["ok"], gone["code"]) == (False, "unreachable")
    assert stored(engine, site_id).last_test_ok is False


# ---- scoping -------------------------------------------------------------------------
def test_another_accounts_site_is_not_found(
    client: TestClient, engine: Engine, owner: tuple[int, str, int], checker: StubChecker
) -> None:
    _, key, site_id = owner
    connect(client, key, site_id)
    _, stranger = builders.account(engine)
    body = {"base_url": "https://evil.example.com", "username": "x", "application_password": "y"}

    answers = [
        client.get(url(site_id), headers=auth(stranger)),
        client.put(url(site_id), json=body, headers=auth(stranger)),
        client.post(url(site_id, "/test"), headers=auth(stranger)),
        client.delete(url(site_id), headers=auth(stranger)),
    ]

    for response in answers:
        assert response.status_code == 404, response.text
        assert response.json() == {"detail": f"Site {site_id} not found"}
    assert stored(engine, site_id).base_url == "https://blog.example.com"
    assert checker.calls == []


# ---- domain/secrets ------------------------------------------------------------------
def test_secrets_round_trip_and_refuse_other_keys() -> None:
    first, second = secrets.encrypt("pässword", SECRET), secrets.encrypt("pässword", SECRET)

    assert first != second  # a fresh IV each time
    assert secrets.decrypt(first, SECRET) == secrets.decrypt(second, SECRET) == "pässword"
    with pytest.raises(secrets.SecretUnreadable):
        secrets.decrypt(first, "another-secret-key")
    with pytest.raises(secrets.SecretUnreadable):
        secrets.decrypt(first[:-4] + "AAAA", SECRET)
    with pytest.raises(secrets.SecretUnreadable):
        secrets.decrypt("not a token at all ✓", SECRET)
    with pytest.raises(ValueError, match="SECRET_KEY is empty"):
        secrets.encrypt("x", "")
