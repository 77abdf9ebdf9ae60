"""The dashboard's session cookie and CSRF rules, and its page-level guards, without a
browser (the browser tests are in test_dashboard.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.dashboard import session as dash_session
from api.dashboard.html import sanitise
from api.main import create_app
from core.settings import Settings
from domain.accounts import deactivate_key
from tests import builders, dbs

BASE = "http://127.0.0.1:8000"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[TestClient, str, int, object]]:
    url = dbs.create_sqlite_database(tmp_path)
    engine = dbs.engine_for(url)
    acct, key = builders.account(engine, credits=50)
    site = builders.site(engine, acct, name="Tea Blog")
    _task, content = builders.task_with_content(engine, acct, site.id, "Green tea")
    settings = Settings(environment="test", database_url=url, data_dir=tmp_path)
    app = create_app(settings, connect_temporal=False)
    with TestClient(app, base_url=BASE) as client:
        yield client, key, content.id, engine
    engine.dispose()


def sign_in(client: TestClient, key: str) -> str:
    resp = client.post("/login", data={"api_key": key, "next": "/content"}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/content"
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and key not in cookie
    page = client.get("/content")
    return re.search(r'data-csrf="([^"]+)"', page.text).group(1)


def test_pages_need_a_session_and_the_api_takes_it_with_csrf_on_writes(world):
    client, key, content_id, _engine = world
    first = client.get("/calendar", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/login?next=%2Fcalendar"
    csrf = sign_in(client, key)
    assert client.get("/api/v1/credits/balance").json()["credits"] == 50
    approve = f"/api/v1/content/{content_id}/approve"
    assert client.post(approve).status_code == 403
    assert client.post(approve, headers={"X-CSRF-Token": "nope"}).status_code == 403
    assert client.post(approve, headers={"X-CSRF-Token": csrf}).status_code == 200
    # a Bearer key still works as before, and wins over a cookie
    bearer = client.get("/api/v1/credits/balance", headers={"Authorization": "Bearer x"})
    assert bearer.status_code == 401


def test_a_tampered_cookie_or_a_revoked_key_ends_the_session(world):
    client, key, _content_id, engine = world
    sign_in(client, key)
    value = client.cookies[dash_session.COOKIE]
    client.cookies.clear()
    client.cookies.set(dash_session.COOKIE, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert client.get("/content", follow_redirects=False).status_code == 303
    assert client.get("/api/v1/credits/balance").status_code == 401
    client.cookies.clear()
    client.cookies.set(dash_session.COOKIE, value)
    assert client.get("/content").status_code == 200
    deactivate_key(engine, key)
    assert client.get("/content", follow_redirects=False).status_code == 303
    assert client.get("/api/v1/credits/balance").status_code == 401


def test_sign_in_refuses_other_origins_and_never_redirects_off_site(world):
    client, key, _content_id, _engine = world
    evil = client.post(
        "/login", data={"api_key": key}, headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )  # fmt: skip
    assert evil.status_code == 401 and dash_session.COOKIE not in client.cookies
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        resp = client.post("/login", data={"api_key": key, "next": target}, follow_redirects=False)
        assert resp.headers["location"] == "/", target
    wrong = client.post("/login", data={"api_key": "igny8_wrong"})
    assert wrong.status_code == 401 and "not valid" in wrong.text


def test_sign_out_needs_the_csrf_token(world):
    client, key, _content_id, _engine = world
    csrf = sign_in(client, key)
    assert client.post("/logout", data={"csrf_token": "nope"}).status_code == 403
    out = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert client.get("/content", follow_redirects=False).status_code == 303


def test_unknown_paths_are_branded_html_and_api_paths_json(world):
    client, key, _content_id, _engine = world
    for signed_in in (False, True):
        if signed_in:
            sign_in(client, key)
        page = client.get("/no/such/page")
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "Page not found" in page.text and "Go back" in page.text and "mailto:" in page.text
        api = client.get("/api/v1/no/such/route")
        assert api.status_code == 404 and api.json() == {"detail": "Not Found"}
    assert client.get("/content/99999999").status_code == 404
    assert client.get("/content/abc").status_code == 404
    assert client.get("/settings?site=99999").status_code == 404


def test_the_article_preview_drops_scripts_handlers_and_bad_links():
    out = str(
        sanitise(
            '<h2 onclick="x()">Hi</h2><script>alert(1)</script><p>ok <a href="javascript:x">a</a>'
            '<a href="https://example.com">b</a><img src=x onerror=y><iframe src=x></iframe>'
        )
    )
    assert out == (
        '<h2>Hi</h2><p>ok <a rel="nofollow noopener noreferrer">a</a>'
        '<a href="https://example.com" rel="nofollow noopener noreferrer">b</a></p>'
    )


def test_pages_of_a_running_workflow_say_so_when_temporal_is_down(world):
    client, key, _content_id, engine = world
    from models.runs import AutomationRun

    with engine.begin() as conn:
        site_id = conn.execute(text("SELECT id FROM igny8_sites")).scalar_one()
        account_id = conn.execute(text("SELECT account_id FROM igny8_sites")).scalar_one()
        conn.execute(
            AutomationRun.__table__.insert().values(
                run_id=f"automation-{account_id}-{site_id}-abc",
                account_id=account_id,
                site_id=site_id,
                active_site_id=site_id,
                status="running",
                summary={},
                cost_usd=0,
                started_at=datetime.now(UTC),
            )
        )
    sign_in(client, key)
    for path in ("/automation", f"/automation/runs/automation-{account_id}-{site_id}-abc"):
        page = client.get(path)
        assert page.status_code == 200 and "Temporal cannot be reached" in page.text, path
