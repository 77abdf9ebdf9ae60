"""The HTTP API on SQLite and PostgreSQL: auth, scoping, errors, credits, sites, keywords.

Each test builds the real app with `create_app(Settings(...), connect_temporal=False)` on
the `engine` fixture's database and drives it with TestClient; the lifespan runs (engine,
ledger) but never dials Temporal.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anyio.to_thread
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import TemporalClientDep, get_temporal
from api.errors import TemporalUnavailable
from api.main import create_app
from api.temporal import TemporalConnector
from core.settings import Settings
from domain.accounts import deactivate_key
from domain.ledger import InsufficientCredits, Ledger, Usage
from domain.pricing import ModelUnavailable
from models import Account, AITaskLog, Notification
from tests import builders

API = "/api/v1"
ADMIN_KEY = "test-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def app(db_url: str, engine: Engine) -> FastAPI:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=db_url,
        admin_api_key=ADMIN_KEY,
    )
    return create_app(settings, connect_temporal=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def owner(engine: Engine) -> tuple[int, str]:
    """An account with 100 credits: (id, api key)."""
    return builders.account(engine, credits=100)


@pytest.fixture
def models(engine: Engine) -> None:
    builders.model_config(engine, model_name="gpt-4o-mini", model_type="text")
    builders.model_config(engine, model_name="gpt-image-1", model_type="image")


def messages(response: Any) -> str:
    """Every message of an error body, joined, for `in` assertions."""
    detail = response.json()["detail"]
    if isinstance(detail, str):
        return detail
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in detail)


def new_site(client: TestClient, key: str, **fields: Any) -> dict[str, Any]:
    response = client.post(f"{API}/sites", json={"name": "Blog", **fields}, headers=auth(key))
    assert response.status_code == 201, response.text
    return response.json()


# ---- health ------------------------------------------------------------------------
def test_health_reports_database_and_missing_temporal(client: TestClient) -> None:
    body = client.get(f"{API}/health").json()
    assert body == {"status": "degraded", "database": "ok", "temporal": "unavailable"}


class _FakeServiceClient:
    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy

    async def check_health(self, **_: Any) -> bool:
        if not self.healthy:
            raise RPCError("down", RPCStatusCode.UNAVAILABLE, b"")
        return True


class _FakeTemporal:
    def __init__(self, healthy: bool) -> None:
        self.service_client = _FakeServiceClient(healthy)


@pytest.mark.parametrize(("healthy", "expected"), [(True, "ok"), (False, "degraded")])
def test_health_asks_temporal_when_connected(app: FastAPI, healthy: bool, expected: str) -> None:
    app.dependency_overrides[get_temporal] = lambda: _FakeTemporal(healthy)
    with TestClient(app) as client:
        body = client.get(f"{API}/health").json()
    assert body["status"] == expected
    assert body["temporal"] == ("ok" if healthy else "unavailable")


# ---- auth --------------------------------------------------------------------------
def test_account_routes_refuse_missing_bad_and_deactivated_keys(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    _, key = owner
    cases = [
        ({}, "Missing API key"),
        ({"Authorization": f"Basic {key}"}, "Malformed Authorization header"),
        ({"Authorization": "Bearer"}, "Malformed Authorization header"),
        (auth("igny8_not-a-real-key"), "Invalid or inactive API key"),
    ]
    for headers, expected in cases:
        response = client.get(f"{API}/credits/balance", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert expected in response.json()["detail"]
    assert client.get(f"{API}/credits/balance", headers=auth(key)).status_code == 200

    deactivate_key(engine, key)
    response = client.get(f"{API}/sites", headers=auth(key))
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid or inactive API key"


def test_deactivated_account_is_refused(client: TestClient, engine: Engine) -> None:
    account_id, key = builders.account(engine)
    with engine.begin() as conn:
        conn.execute(update(Account).where(Account.id == account_id).values(is_active=False))
    assert client.get(f"{API}/credits/balance", headers=auth(key)).status_code == 401


def test_admin_routes_need_the_admin_key(client: TestClient, owner: tuple[int, str]) -> None:
    _, account_key = owner
    for headers in ({}, auth("wrong"), auth(account_key), {"Authorization": b"Bearer \xe9"}):
        for method, path in [
            ("POST", "/admin/accounts"),
            ("GET", "/admin/ai-models"),
            ("POST", "/admin/accounts/1/credits"),
        ]:
            response = client.request(method, f"{API}{path}", json={"name": "x"}, headers=headers)
            assert response.status_code == 401, (headers, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"


# ---- accounts and credits ----------------------------------------------------------
def test_created_account_key_works_and_opening_balance_shows(client: TestClient) -> None:
    response = client.post(
        f"{API}/admin/accounts", json={"name": "Acme", "credits": 250}, headers=ADMIN
    )
    assert response.status_code == 201
    created = response.json()
    assert created["name"] == "Acme" and created["credits"] == 250
    key = created["api_key"]

    balance = client.get(f"{API}/credits/balance", headers=auth(key)).json()
    assert balance == {"credits": 250, "reserved": 0, "available": 250}
    page = client.get(f"{API}/credits/transactions", headers=auth(key)).json()
    assert page["count"] == 1
    assert page["data"][0]["amount"] == 250
    assert page["data"][0]["transaction_type"] == "purchase"
    assert page["data"][0]["balance_after"] == 250


def test_top_up_replay_credits_once_and_another_amount_conflicts(
    client: TestClient, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    url = f"{API}/admin/accounts/{account_id}/credits"
    body = {"amount": 40, "description": "Stripe pi_1", "idempotency_key": "stripe:pi_1"}
    first = client.post(url, json=body, headers=ADMIN)
    again = client.post(url, json=body, headers=ADMIN)
    assert first.status_code == again.status_code == 200
    assert first.json() == {**again.json(), "replayed": False}
    assert again.json()["replayed"] is True
    assert first.json()["balance_after"] == 140
    assert client.get(f"{API}/credits/balance", headers=auth(key)).json()["credits"] == 140

    conflict = client.post(url, json={**body, "amount": 41}, headers=ADMIN)
    assert conflict.status_code == 409
    assert "stripe:pi_1" in conflict.json()["detail"]

    fresh_key = {**body, "idempotency_key": "stripe:pi_2"}
    missing = client.post(f"{API}/admin/accounts/9999/credits", json=fresh_key, headers=ADMIN)
    assert missing.status_code == 404
    assert "9999" in missing.json()["detail"]
    no_key = client.post(url, json={"amount": 5}, headers=ADMIN)
    assert no_key.status_code == 422 and "idempotency_key" in messages(no_key)


def test_usage_carries_cost_and_pages_newest_first(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    ledger = Ledger(engine)
    for n in range(3):
        usage = Usage(operation_type="image_generation", cost_usd=Decimal("0.04"), model_name="m")
        ledger.deduct(account_id, 2, f"wf:image:{n}", usage)
    ledger.deduct(account_id, 1, "wf:text:1", Usage(operation_type="content_generation"))

    page = client.get(
        f"{API}/credits/usage?operation_type=image_generation&limit=2", headers=auth(key)
    ).json()
    assert page["count"] == 3 and len(page["data"]) == 2
    assert Decimal(str(page["data"][0]["cost_usd"])) == Decimal("0.04")
    assert page["data"][0]["id"] > page["data"][1]["id"]

    txs = client.get(f"{API}/credits/transactions?skip=1&limit=500", headers=auth(key)).json()
    assert txs["count"] == 5 and len(txs["data"]) == 4
    assert txs["data"][-1]["transaction_type"] == "purchase"
    assert client.get(f"{API}/credits/balance", headers=auth(key)).json()["available"] == 93
    for query in ("limit=0", "limit=501", "skip=-1"):
        assert (
            client.get(f"{API}/credits/transactions?{query}", headers=auth(key)).status_code == 422
        )


# ---- logs --------------------------------------------------------------------------
def _log_and_notify(engine: Engine, account_id: int, tag: str) -> tuple[int, int]:
    with Session(engine, expire_on_commit=False) as session:
        log = AITaskLog(
            account_id=account_id,
            function_name="generate_images",
            status="success",
            phase="DONE",
            idempotency_key=f"log:{tag}",
        )
        session.add(log)
        session.flush()
        note = Notification(
            account_id=account_id,
            notification_type="ai_image_success",
            title="Images ready",
            ai_task_log_id=log.id,
            idempotency_key=f"note:{tag}",
        )
        session.add(note)
        session.commit()
        return log.id, note.id


def test_logs_and_notifications_are_scoped_and_filterable(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    other_id, other_key = builders.account(engine)
    _, note_id = _log_and_notify(engine, account_id, "mine")
    _, other_note = _log_and_notify(engine, other_id, "theirs")

    logs = client.get(f"{API}/ai-task-logs?function_name=generate_images", headers=auth(key))
    assert logs.json()["count"] == 1
    assert client.get(f"{API}/ai-task-logs?status=error", headers=auth(key)).json()["count"] == 0

    assert client.get(f"{API}/notifications?unread=true", headers=auth(key)).json()["count"] == 1
    read = client.post(f"{API}/notifications/{note_id}/read", headers=auth(key))
    assert read.status_code == 200 and read.json()["is_read"] is True
    assert client.get(f"{API}/notifications?unread=true", headers=auth(key)).json()["count"] == 0
    assert client.get(f"{API}/notifications?unread=false", headers=auth(key)).json()["count"] == 1

    foreign = client.post(f"{API}/notifications/{other_note}/read", headers=auth(key))
    assert foreign.status_code == 404
    assert (
        client.get(f"{API}/notifications", headers=auth(other_key)).json()["data"][0]["is_read"]
        is False
    )


# ---- sites -------------------------------------------------------------------------
def test_site_settings_round_trip(client: TestClient, owner: tuple[int, str], models: None) -> None:
    _, key = owner
    site = new_site(client, key, url="https://blog.example", sectors=["Coffee", " coffee ", "Tea"])
    assert [s["name"] for s in site["sectors"]] == ["Coffee", "Tea"]
    assert site["timezone"] == "UTC" and site["publish_time"] == "09:00"
    assert site["schedule_interval"] == "daily" and site["max_posts_per_day"] == 1

    changes = {
        "auto_approve_content": True,
        "auto_schedule": True,
        "schedule_interval": "weekly",
        "publish_time": "7:30",
        "timezone": "Europe/Berlin",
        "max_posts_per_day": 3,
        "max_in_article_images": 4,
        "text_model": "gpt-4o-mini",
        "image_model": "gpt-image-1",
    }
    patched = client.patch(f"{API}/sites/{site['id']}", json=changes, headers=auth(key))
    assert patched.status_code == 200, patched.text
    fetched = client.get(f"{API}/sites/{site['id']}", headers=auth(key)).json()
    assert fetched == patched.json()
    assert {k: fetched[k] for k in changes} == {**changes, "publish_time": "07:30"}
    assert fetched["name"] == "Blog" and len(fetched["sectors"]) == 2

    cleared = client.patch(
        f"{API}/sites/{site['id']}", json={"image_model": None, "text_model": ""}, headers=auth(key)
    )
    assert cleared.json()["image_model"] is None and cleared.json()["text_model"] is None
    every_other_day = client.patch(
        f"{API}/sites/{site['id']}", json={"schedule_interval": "every_2_days"}, headers=auth(key)
    )
    assert every_other_day.json()["schedule_interval"] == "every_2_days"
    assert every_other_day.json()["max_posts_per_day"] == 3
    page = client.get(f"{API}/sites", headers=auth(key)).json()
    assert page["count"] == 1 and page["data"][0]["sectors"][0]["name"] == "Coffee"


def test_site_validation_names_the_problem(
    client: TestClient, owner: tuple[int, str], models: None
) -> None:
    _, key = owner
    site = new_site(client, key)
    url = f"{API}/sites/{site['id']}"
    cases = [
        ({"timezone": "Mars/Olympus"}, "timezone", "Mars/Olympus"),
        ({"publish_time": "25:00"}, "publish_time", "25:00"),
        ({"schedule_interval": "hourly"}, "schedule_interval", "'every_2_days'"),
        ({"schedule_interval": None}, "schedule_interval", "may not be null"),
        ({"max_posts_per_day": 0}, "max_posts_per_day", "greater than or equal to 1"),
        ({"max_posts_per_day": 25}, "max_posts_per_day", "less than or equal to 24"),
        ({"text_model": "gpt-nonexistent"}, "text_model", "gpt-nonexistent"),
        ({"image_model": "gpt-4o-mini"}, "image_model", "not a image model"),
        ({"name": None}, "name", "may not be null"),
    ]
    for body, field, expected in cases:
        response = client.patch(url, json=body, headers=auth(key))
        assert response.status_code == 422, (body, response.text)
        text = messages(response)
        assert field in text and expected in text, text
    create = client.post(f"{API}/sites", json={"url": "https://x"}, headers=auth(key))
    assert create.status_code == 422 and "body.name: Field required" in messages(create)
    unknown = client.post(
        f"{API}/sites", json={"name": "B", "image_model": "dall-e-9"}, headers=auth(key)
    )
    assert unknown.status_code == 422 and "dall-e-9" in messages(unknown)
    assert client.get(url, headers=auth(key)).json()["timezone"] == "UTC"


def test_other_accounts_objects_answer_404(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    owner_id, _ = owner
    _, stranger = builders.account(engine)
    site = builders.site(engine, owner_id)
    _, content = builders.task_with_content(engine, owner_id, site.id)
    paths = [
        f"/sites/{site.id}",
        f"/sites/{site.id}/keywords",
        f"/sites/{site.id}/clusters",
        f"/sites/{site.id}/tasks",
        f"/sites/{site.id}/content",
        f"/content/{content.id}",
    ]
    for path in paths:
        response = client.get(f"{API}{path}", headers=auth(stranger))
        assert response.status_code == 404, path
    patch = client.patch(f"{API}/sites/{site.id}", json={"name": "mine"}, headers=auth(stranger))
    assert patch.status_code == 404 and patch.json()["detail"] == f"Site {site.id} not found"
    upload = client.post(
        f"{API}/sites/{site.id}/keywords", json={"keywords": ["x"]}, headers=auth(stranger)
    )
    assert upload.status_code == 404


def test_pipeline_reads(client: TestClient, engine: Engine, owner: tuple[int, str]) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    task, content = builders.task_with_content(engine, account_id, site.id)
    base = f"{API}/sites/{site.id}"
    tasks = client.get(f"{base}/tasks", headers=auth(key)).json()
    assert tasks["count"] == 1 and tasks["data"][0]["title"] == task.title
    listed = client.get(f"{base}/content?status=draft", headers=auth(key)).json()
    assert listed["count"] == 1 and "html" not in listed["data"][0]
    assert client.get(f"{base}/content?status=review", headers=auth(key)).json()["count"] == 0
    assert client.get(f"{base}/content?status=bogus", headers=auth(key)).status_code == 422
    detail = client.get(f"{API}/content/{content.id}", headers=auth(key)).json()
    assert detail["html"].startswith("<h2>") and detail["site_status"] == "not_published"
    for resource in ("clusters", "ideas", "images"):
        assert client.get(f"{base}/{resource}", headers=auth(key)).json() == {
            "data": [],
            "count": 0,
        }


# ---- keywords ----------------------------------------------------------------------
def test_keyword_import_json_normalises_and_reports_duplicates(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    url = f"{API}/sites/{site.id}/keywords"
    body = {
        "keywords": [
            "  Best   Coffee  Beans ",
            {"keyword": "french press", "volume": 900, "difficulty": 30, "intent": "Commercial"},
            "best coffee beans",
            "   ",
        ]
    }
    first = client.post(url, json=body, headers=auth(key))
    assert first.status_code == 201, first.text
    assert first.json() == {
        "created": 2,
        "duplicates": ["best coffee beans"],
        "invalid": [{"row": 4, "error": "keyword is empty"}],
    }
    again = client.post(url, json={"keywords": ["FRENCH PRESS", "pour over"]}, headers=auth(key))
    assert again.json()["created"] == 1 and again.json()["duplicates"] == ["french press"]

    page = client.get(f"{url}?limit=10", headers=auth(key)).json()
    assert page["count"] == 3
    press = next(k for k in page["data"] if k["keyword"] == "french press")
    assert (press["volume"], press["difficulty"], press["intent"]) == (900, 30, "commercial")
    assert client.get(f"{url}?status=clustered", headers=auth(key)).json()["count"] == 0

    bad = client.post(
        url, json={"keywords": [{"keyword": "x", "difficulty": 101}]}, headers=auth(key)
    )
    assert bad.status_code == 422 and "difficulty" in messages(bad)
    foreign_sector = client.post(url, json={"keywords": ["x"], "sector_id": 999}, headers=auth(key))
    assert foreign_sector.status_code == 422 and "Sector 999" in messages(foreign_sector)


def test_keyword_import_csv(client: TestClient, engine: Engine, owner: tuple[int, str]) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    url = f"{API}/sites/{site.id}/keywords"
    client.post(url, json={"keywords": ["espresso"]}, headers=auth(key))
    csv_text = (
        "Keyword,Volume,Difficulty,Intent\n"
        "Cold Brew,1200,40,informational\n"
        "espresso,10,5,\n"
        "cold  brew,1,1,\n"
        "latte art,lots,3,\n"
        ",,,\n"
        "moka pot,300,,\n"
    )
    files = {"file": ("keywords.csv", csv_text.encode(), "text/csv")}
    response = client.post(url, files=files, headers=auth(key))
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["created"] == 2
    assert result["duplicates"] == ["espresso", "cold brew"]
    assert len(result["invalid"]) == 1 and result["invalid"][0]["row"] == 5
    assert "volume" in result["invalid"][0]["error"]

    keywords = client.get(url, headers=auth(key)).json()["data"]
    assert {k["keyword"]: k["volume"] for k in keywords} == {
        "espresso": 0,
        "cold brew": 1200,
        "moka pot": 300,
    }
    sector_id = client.get(f"{API}/sites/{site.id}", headers=auth(key)).json()["sectors"][0]["id"]
    with_sector = client.post(
        url,
        files={"file": ("k.csv", b"keyword\nchemex\n", "text/csv")},
        data={"sector_id": str(sector_id)},
        headers=auth(key),
    )
    assert with_sector.json()["created"] == 1
    chemex = client.get(f"{url}?sector_id={sector_id}", headers=auth(key)).json()["data"]
    assert [k["keyword"] for k in chemex] == ["chemex"]


def test_keyword_csv_errors_are_clear(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    url = f"{API}/sites/{site.id}/keywords"

    def upload(content: bytes, **extra: Any) -> Any:
        files = {"file": ("k.csv", content, "text/csv")}
        return client.post(url, files=files, headers=auth(key), **extra)

    no_column = upload(b"term,volume\ncoffee,10\n")
    assert no_column.status_code == 422
    assert "no 'keyword' column" in messages(no_column) and "term" in messages(no_column)
    assert upload(b"").status_code == 422
    assert "UTF-8" in messages(upload(b"keyword\n\xff\xfe\n"))
    assert upload(b"keyword\nx\n", data={"sector_id": "abc"}).status_code == 422
    no_file = client.post(url, data={"other": "x"}, headers=auth(key))
    assert no_file.status_code == 422 and "'file'" in messages(no_file)
    plain = client.post(url, content=b"hello", headers={**auth(key), "Content-Type": "text/plain"})
    assert plain.status_code == 415 and "multipart/form-data" in plain.json()["detail"]
    semicolons = upload(b"keyword;volume\nfilter coffee;50\n")
    assert semicolons.json()["created"] == 1


# ---- admin: AI models --------------------------------------------------------------
def test_ai_model_admin(client: TestClient) -> None:
    url = f"{API}/admin/ai-models"
    body = {
        "model_name": "flux-dev",
        "provider": "runware",
        "model_type": "image",
        "cost_per_image": "0.0038",
        "credits_per_image": 1,
        "is_default": True,
    }
    created = client.post(url, json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert Decimal(str(created.json()["cost_per_image"])) == Decimal("0.0038")
    duplicate = client.post(url, json=body, headers=ADMIN)
    assert duplicate.status_code == 409 and "flux-dev" in duplicate.json()["detail"]
    for field, value in (("provider", "acme"), ("model_type", "video")):
        bad = client.post(url, json={**body, "model_name": "x", field: value}, headers=ADMIN)
        assert bad.status_code == 422 and field in messages(bad)

    second = {**body, "model_name": "gpt-image-1", "provider": "openai"}
    assert client.post(url, json=second, headers=ADMIN).status_code == 201
    listed = {m["model_name"]: m for m in client.get(url, headers=ADMIN).json()}
    assert listed["gpt-image-1"]["is_default"] and not listed["flux-dev"]["is_default"]

    patched = client.patch(
        f"{url}/flux-dev", json={"max_concurrency": 20, "is_active": False}, headers=ADMIN
    )
    assert patched.status_code == 200
    assert (patched.json()["max_concurrency"], patched.json()["is_active"]) == (20, False)
    assert client.patch(f"{url}/nope", json={}, headers=ADMIN).status_code == 404
    assert (
        client.patch(f"{url}/flux-dev", json={"provider": None}, headers=ADMIN).status_code == 422
    )


# ---- errors ------------------------------------------------------------------------
def test_bad_account_bodies_are_422_with_readable_details(client: TestClient) -> None:
    url = f"{API}/admin/accounts"
    missing = client.post(url, json={"credits": 5}, headers=ADMIN)
    assert missing.status_code == 422
    assert missing.json()["detail"] == [
        {"loc": ["body", "name"], "msg": "Field required", "type": "missing"}
    ]
    negative = client.post(url, json={"name": "A", "credits": -5}, headers=ADMIN)
    assert negative.status_code == 422
    assert "body.credits: Input should be greater than or equal to 0" in messages(negative)
    not_json = client.post(
        url, content=b"name=A", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 422
    assert "JSON decode error" in messages(not_json)
    blank = client.post(url, json={"name": "   "}, headers=ADMIN)
    assert blank.status_code == 422 and "blank" in messages(blank)


MALFORMED: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/admin/accounts", {"json": []}),
    ("POST", "/admin/accounts", {"json": "text"}),
    ("POST", "/admin/accounts", {"json": None}),
    ("POST", "/admin/accounts", {"json": {"name": 5}}),
    ("POST", "/admin/accounts", {"json": {"name": "x", "credits": 10**40}}),
    ("POST", "/admin/accounts", {"json": {"name": "x" * 1000}}),
    ("POST", "/admin/accounts", {"json": {"name": "nul\x00byte"}}),
    (
        "POST",
        "/admin/accounts",
        {"content": b"\xff\xfe", "headers": {"Content-Type": "application/json"}},
    ),
    ("POST", "/admin/accounts", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}),
    ("POST", "/admin/accounts/1/credits", {"json": {"amount": "1e400", "idempotency_key": "k"}}),
    ("POST", "/admin/accounts/1/credits", {"json": {"amount": 1.5, "idempotency_key": "k"}}),
    ("POST", "/admin/accounts/1/credits", {"json": {"amount": 10, "idempotency_key": "k" * 300}}),
    ("POST", "/admin/accounts/99999999999999999999/credits", {"json": {"amount": 1}}),
    ("POST", "/admin/ai-models", {"json": {"model_name": ""}}),
    ("POST", "/admin/ai-models", {"json": {"model_name": "m", "cost_per_image": "NaN"}}),
    ("POST", "/admin/ai-models", {"json": {"model_name": "m", "cost_per_image": "1e30"}}),
    ("POST", "/admin/ai-models", {"json": {"model_name": "m", "max_concurrency": 0}}),
    ("PATCH", "/admin/ai-models/" + "m" * 300, {"json": {}}),
    ("GET", "/sites/99999999999999999999", {}),
    ("GET", "/sites/abc", {}),
    ("GET", "/content/-1", {}),
    ("GET", "/credits/transactions?skip=abc", {}),
    ("GET", "/credits/usage?limit=99999999999999999999999", {}),
    ("GET", "/notifications?unread=maybe", {}),
    ("POST", "/notifications/0/read", {}),
    ("POST", "/sites", {"json": {"name": "s", "max_in_article_images": 99}}),
    ("POST", "/sites", {"json": {"name": "s", "schedule_interval": "yearly"}}),
    ("POST", "/sites", {"json": {"name": "s", "schedule_interval": "hourly"}}),
    ("POST", "/sites", {"json": {"name": "s", "max_posts_per_day": 10**20}}),
    ("POST", "/sites", {"json": {"name": "s", "sectors": "not-a-list"}}),
    ("POST", "/sites", {"json": {"name": "s", "sectors": [""]}}),
    ("POST", "/sites", {"json": {"name": "s", "publish_time": "ab:cd"}}),
    ("POST", "/sites", {"json": {"name": "s", "publish_time": "12"}}),
    ("POST", "/sites", {"json": {"name": "s", "timezone": "../../etc/passwd"}}),
    ("POST", "/sites", {"json": {"name": "s", "timezone": ""}}),
    ("POST", "/sites", {"json": {"name": "s", "text_model": 5}}),
    ("PATCH", "/sites/{site}", {"json": []}),
    ("PATCH", "/sites/{site}", {"json": {"auto_schedule": None}}),
    ("PATCH", "/sites/{site}", {"json": {"max_in_article_images": "many"}}),
    ("PATCH", "/sites/{site}", {"json": {"max_posts_per_day": None}}),
    ("POST", "/sites/{site}/keywords", {"json": {"keywords": []}}),
    ("POST", "/sites/{site}/keywords", {"json": {}}),
    ("POST", "/sites/{site}/keywords", {"json": {"keywords": [5]}}),
    (
        "POST",
        "/sites/{site}/keywords",
        {"json": {"keywords": [{"keyword": "a", "volume": 10**20}]}},
    ),
    (
        "POST",
        "/sites/{site}/keywords",
        {"json": {"keywords": [{"keyword": "a", "sector_id": 10**12}]}},
    ),
    ("POST", "/sites/{site}/keywords", {"json": {"keywords": ["x" * 300, "nul\x00x"]}}),
    (
        "POST",
        "/sites/{site}/keywords",
        {"content": b"{", "headers": {"Content-Type": "application/json"}},
    ),
    (
        "POST",
        "/sites/{site}/keywords",
        {"content": b"keyword\n\x00\n", "headers": {"Content-Type": "text/csv"}},
    ),
    (
        "POST",
        "/sites/{site}/keywords",
        {
            "content": b"--x\r\nbroken",
            "headers": {"Content-Type": "multipart/form-data; boundary=x"},
        },
    ),
    ("POST", "/sites/{site}/keywords", {}),
    ("GET", "/sites/{site}/keywords?sector_id=0", {}),
    ("GET", "/sites/{site}/images?task_id=-4", {}),
]


def test_malformed_input_never_causes_a_500(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    for method, path, request_kwargs in MALFORMED:
        kwargs = dict(request_kwargs)
        headers = {
            **(ADMIN if path.startswith("/admin") else auth(key)),
            **kwargs.pop("headers", {}),
        }
        url = API + path.replace("{site}", str(site.id))
        response = client.request(method, url, headers=headers, **kwargs)
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        assert "detail" in response.json() or response.status_code < 300, (path, response.text)


def _needs_temporal(client: TemporalClientDep) -> None:
    raise AssertionError("unreachable without Temporal")


def _raiser(exc: Exception) -> Any:
    def endpoint() -> None:
        raise exc

    return endpoint


def test_domain_and_temporal_errors_map_to_statuses(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """Later routes (image batches, runs) raise these; the mapping lives in api.errors."""
    raising = {
        "insufficient": InsufficientCredits(12, 5),
        "not-found": RPCError("workflow not found for ID: wf-1", RPCStatusCode.NOT_FOUND, b""),
        "exists": RPCError("exists", RPCStatusCode.ALREADY_EXISTS, b""),
        "started": WorkflowAlreadyStartedError("run-1", "AutomationRunWorkflow"),
        "down": RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b""),
        "model": ModelUnavailable("AI model 'x' is not configured"),
        "rule": ValueError("Opening credits cannot be negative"),
        "no-temporal": TemporalUnavailable(),
        "bug": KeyError("secret internals"),
    }
    for name, exc in raising.items():
        app.add_api_route(f"/boom/{name}", _raiser(exc))
    app.add_api_route("/boom/needs-temporal", _needs_temporal)
    with TestClient(app, raise_server_exceptions=False) as client:
        got = {name: client.get(f"/boom/{name}") for name in [*raising, "needs-temporal"]}
    assert got["insufficient"].status_code == 402
    assert got["insufficient"].json() == {
        "detail": "Insufficient credits. Required: 12, Available: 5"
    }
    assert got["not-found"].status_code == 404
    assert got["exists"].status_code == 409
    assert got["started"].status_code == 409 and "run-1" in got["started"].json()["detail"]
    assert got["down"].status_code == 503
    assert got["down"].json() == {"detail": "Temporal is unavailable"}
    assert got["model"].status_code == 422 and "'x'" in messages(got["model"])
    assert got["rule"].status_code == 400
    assert got["no-temporal"].status_code == 503
    assert got["needs-temporal"].json() == {"detail": "Temporal is unavailable"}
    assert got["bug"].status_code == 500
    assert got["bug"].json() == {"detail": "Internal server error"}
    assert "Unhandled error on GET /boom/bug" in caplog.text


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on: bound (not listening) for the whole test, so no other
    process can start serving there while the test expects it refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_unreachable_temporal_never_stops_the_api(
    db_url: str, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(_env_file=None, database_url=db_url, temporal_port=closed_port)  # type: ignore[call-arg]
    with caplog.at_level(logging.WARNING, "igny8.api"), TestClient(create_app(settings)) as client:
        body = client.get(f"{API}/health").json()
    assert body["temporal"] == "unavailable" and body["database"] == "ok"
    assert "is unavailable" in caplog.text


async def _thread_tokens() -> float:
    return anyio.to_thread.current_default_thread_limiter().total_tokens


@pytest.mark.parametrize(("pool_size", "threads"), [(20, 40), (5, 40), (35, 70)])
def test_thread_pool_is_sized_to_the_database_pool(
    db_url: str, pool_size: int, threads: int
) -> None:
    """Blocking routes share the thread pool: as many threads as database connections
    (pool plus overflow), never fewer than anyio's 40."""
    settings = Settings(_env_file=None, database_url=db_url, db_pool_size=pool_size)  # type: ignore[call-arg]
    with TestClient(create_app(settings, connect_temporal=False)) as client:
        assert client.portal.call(_thread_tokens) == threads


async def test_connector_retries_lazily_and_only_when_enabled(closed_port: int) -> None:
    settings = Settings(_env_file=None, temporal_port=closed_port)  # type: ignore[call-arg]
    assert await TemporalConnector(settings, enabled=False).get() is None
    connector = TemporalConnector(settings, timeout_seconds=1, retry_seconds=3600)
    assert await connector.connect() is None
    attempted = connector._last_attempt
    assert await connector.get() is None and connector._last_attempt == attempted


def test_openapi_documents_every_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "igny8 API"
    assert all(path.startswith(API) for path in schema["paths"])
    body = schema["paths"][f"{API}/sites/{{site_id}}/keywords"]["post"]["requestBody"]
    assert {"application/json", "multipart/form-data"} <= set(body["content"])
    assert "KeywordImport" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200
