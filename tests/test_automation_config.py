"""A site's automation config over HTTP, on SQLite and PostgreSQL: defaults without a row,
partial PUTs, a 422 naming the field for every bad value, 404 across accounts; and
migration 0003 on databases that already hold sites.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from api.main import create_app
from core.settings import Settings
from models import AutomationConfigBase
from models.automation import load_automation_config
from models.db import make_engine
from models.migrate import downgrade, upgrade
from tests import builders

API = "/api/v1"
DEFAULTS = AutomationConfigBase().model_dump()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def messages(response: Any) -> str:
    """Every `loc: msg` of a 422, joined, for `in` assertions."""
    return " | ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in response.json()["detail"]
    )


@pytest.fixture
def client(db_url: str, engine: Engine) -> Iterator[TestClient]:
    settings = Settings(_env_file=None, environment="test", database_url=db_url)  # type: ignore[call-arg]
    with TestClient(create_app(settings, connect_temporal=False)) as test_client:
        yield test_client


@pytest.fixture
def owner(engine: Engine) -> tuple[int, str]:
    return builders.account(engine)


@pytest.fixture
def site_url(engine: Engine, owner: tuple[int, str]) -> str:
    """The config URL of a site of `owner`, with text, image and inactive models configured."""
    builders.model_config(engine, model_name="gpt-4o-mini", model_type="text")
    builders.model_config(engine, model_name="gpt-image-1", model_type="image")
    builders.model_config(engine, model_name="gpt-3", model_type="text", is_active=False)
    site = builders.site(engine, owner[0])
    return f"{API}/sites/{site.id}/automation-config"


def test_get_answers_the_defaults_while_nothing_is_saved(
    client: TestClient, engine: Engine, owner: tuple[int, str], site_url: str
) -> None:
    response = client.get(site_url, headers=auth(owner[1]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["updated_at"] is None and body["site_id"] == int(site_url.split("/")[-2])
    assert {k: body[k] for k in DEFAULTS} == DEFAULTS
    assert DEFAULTS["keywords_per_cluster_call"] == 20 and DEFAULTS["image_batch_size"] == 5
    assert DEFAULTS["ideas_batch_size"] == DEFAULTS["content_batch_size"] == 10
    assert DEFAULTS["schedule_enabled"] is False
    with engine.connect() as conn:
        assert load_automation_config(conn, body["site_id"]) == AutomationConfigBase()


def test_put_then_get_round_trip_and_partial_updates(
    client: TestClient, engine: Engine, owner: tuple[int, str], site_url: str
) -> None:
    key = owner[1]
    full = {
        "keywords_per_cluster_call": 50,
        "ideas_batch_size": 3,
        "content_batch_size": 4,
        "image_prompts_batch_size": 6,
        "image_batch_size": 2,
        "max_keywords_per_run": 500,
        "text_model": "gpt-4o-mini",
        "image_model": "gpt-image-1",
        "max_in_article_images": 0,
        "schedule_enabled": False,  # enabling needs Temporal: tests/test_automation_schedule.py
        "schedule_frequency": "weekly",
        "schedule_time": "6:05",
        "schedule_weekday": 0,
    }
    saved = client.put(site_url, json=full, headers=auth(key))
    assert saved.status_code == 200, saved.text
    assert saved.json()["updated_at"] is not None
    fetched = client.get(site_url, headers=auth(key)).json()
    assert fetched == saved.json()
    assert {k: fetched[k] for k in full} == {**full, "schedule_time": "06:05"}

    partial = client.put(
        site_url,
        json={
            "content_batch_size": 7,
            "text_model": None,
            "image_model": "",
            "schedule_weekday": 6,
        },
        headers=auth(key),
    )
    assert partial.status_code == 200, partial.text
    expected = {**full, "schedule_time": "06:05", "content_batch_size": 7, "schedule_weekday": 6}
    expected.update(text_model=None, image_model=None)
    assert {k: partial.json()[k] for k in full} == expected
    with engine.connect() as conn:
        stored = load_automation_config(conn, partial.json()["site_id"])
    assert stored.model_dump() == expected

    to_daily = client.put(site_url, json={"schedule_frequency": "daily"}, headers=auth(key))
    assert to_daily.status_code == 200 and to_daily.json()["schedule_weekday"] == 6


BAD_VALUES = [
    ({"ideas_batch_size": 0}, "ideas_batch_size", "greater than or equal to 1"),
    ({"content_batch_size": 51}, "content_batch_size", "less than or equal to 50"),
    ({"image_prompts_batch_size": -1}, "image_prompts_batch_size", "greater than or equal"),
    ({"image_batch_size": 100}, "image_batch_size", "less than or equal to 50"),
    ({"keywords_per_cluster_call": 4}, "keywords_per_cluster_call", "greater than or equal to 5"),
    ({"keywords_per_cluster_call": 101}, "keywords_per_cluster_call", "less than or equal"),
    ({"max_keywords_per_run": 0}, "max_keywords_per_run", "greater than or equal to 1"),
    ({"max_keywords_per_run": 10**12}, "max_keywords_per_run", "less than or equal"),
    ({"max_in_article_images": 11}, "max_in_article_images", "less than or equal to 10"),
    ({"image_batch_size": "many"}, "image_batch_size", "valid integer"),
    ({"text_model": "gpt-nonexistent"}, "text_model", "'gpt-nonexistent' is not configured"),
    ({"text_model": "gpt-3"}, "text_model", "'gpt-3' is inactive"),
    ({"text_model": "gpt-image-1"}, "text_model", "not a text model"),
    ({"image_model": "gpt-4o-mini"}, "image_model", "not a image model"),
    ({"schedule_time": "25:00"}, "schedule_time", "'25:00' must be HH:MM"),
    ({"schedule_time": "9"}, "schedule_time", "must be HH:MM"),
    ({"schedule_time": "ab:cd"}, "schedule_time", "must be HH:MM"),
    ({"schedule_frequency": "monthly"}, "schedule_frequency", "'daily' or 'weekly'"),
    ({"schedule_frequency": "weekly"}, "schedule_weekday", "required when schedule_frequency"),
    ({"schedule_weekday": 7}, "schedule_weekday", "less than or equal to 6"),
    ({"ideas_batch_size": None}, "ideas_batch_size", "may not be null"),
    ({"schedule_enabled": None}, "schedule_enabled", "may not be null"),
    ({"batch_size": 5}, "batch_size", "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("body", "field", "expected"), BAD_VALUES, ids=lambda v: str(v))
def test_a_bad_value_is_a_422_naming_the_field(
    client: TestClient, owner: tuple[int, str], site_url: str, body: dict, field: str, expected: str
) -> None:
    response = client.put(site_url, json=body, headers=auth(owner[1]))
    assert response.status_code == 422, response.text
    text = messages(response)
    assert f"body.{field}:" in text and expected in text, text
    assert client.get(site_url, headers=auth(owner[1])).json()["updated_at"] is None


def test_a_weekly_schedule_keeps_its_weekday(
    client: TestClient, owner: tuple[int, str], site_url: str
) -> None:
    """The saved config merged with the changes is what must be valid."""
    key = owner[1]
    weekly = {"schedule_frequency": "weekly", "schedule_weekday": 2}
    assert client.put(site_url, json=weekly, headers=auth(key)).status_code == 200
    cleared = client.put(site_url, json={"schedule_weekday": None}, headers=auth(key))
    assert cleared.status_code == 422
    assert "body.schedule_weekday: schedule_weekday (0 = Monday" in messages(cleared)
    assert client.get(site_url, headers=auth(key)).json()["schedule_weekday"] == 2


def test_another_accounts_site_is_not_found(
    client: TestClient, engine: Engine, owner: tuple[int, str], site_url: str
) -> None:
    _, stranger = builders.account(engine)
    for method, body in (("GET", None), ("PUT", {"ideas_batch_size": 2})):
        response = client.request(method, site_url, json=body, headers=auth(stranger))
        assert response.status_code == 404, response.text
        missing = client.request(
            method, f"{API}/sites/999999/automation-config", json=body, headers=auth(owner[1])
        )
        assert missing.status_code == 404
    assert client.get(site_url, headers=auth(owner[1])).json()["ideas_batch_size"] == 10
    assert client.get(site_url).status_code == 401


# ---- migration 0003 on a database that already has sites ----------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def url_at_0002(
    request: pytest.FixtureRequest, tmp_path: Path, pg_admin_url: str | None
) -> Iterator[str]:
    """A database of its own, migrated to 0002 (the fixtures' databases are at head)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'at_0002.db'}"
        upgrade(url, "0002")
        yield url
        return
    if pg_admin_url is None:
        pytest.skip("PostgreSQL unreachable")
    name = f"igny8_test_0003_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url, "0002")
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _seed_sites(url: str, intervals: list[str]) -> None:
    """Raw SQL: the models describe the head schema, not 0002's."""
    engine = make_engine(url)
    with engine.begin() as conn:
        account_id = conn.execute(
            sa.text(
                "INSERT INTO igny8_accounts (name, credits, credits_reserved, is_active, "
                "created_at) VALUES ('a', 0, 0, true, CURRENT_TIMESTAMP) RETURNING id"
            )
        ).scalar_one()
        for position, interval in enumerate(intervals):
            site_id = conn.execute(
                sa.text(
                    "INSERT INTO igny8_sites (auto_approve_content, auto_schedule, "
                    "schedule_interval, publish_time, timezone, max_in_article_images, name, "
                    "url, account_id, is_active, created_at) VALUES (false, true, :interval, "
                    "'08:15', 'Europe/Berlin', 3, :name, '', :account, true, CURRENT_TIMESTAMP) "
                    "RETURNING id"
                ),
                {"interval": interval, "name": f"site {position}", "account": account_id},
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO igny8_sectors (account_id, site_id, name, created_at) "
                    "VALUES (:account, :site, 'General', CURRENT_TIMESTAMP)"
                ),
                {"account": account_id, "site": site_id},
            )
    engine.dispose()


def _sites(url: str) -> list[dict[str, Any]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM igny8_sites ORDER BY id")).mappings().all()
        sectors = conn.execute(sa.text("SELECT site_id FROM igny8_sectors ORDER BY site_id"))
        assert [row.site_id for row in sectors] == [row["id"] for row in rows]
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
    engine.dispose()
    return [dict(row) for row in rows]


def test_migration_0003_keeps_sites_maps_hourly_and_downgrades(url_at_0002: str) -> None:
    url = url_at_0002
    _seed_sites(url, ["hourly", "daily", "weekly"])
    upgrade(url)
    sites = _sites(url)
    assert [s["schedule_interval"] for s in sites] == ["daily", "daily", "weekly"]
    assert {s["max_posts_per_day"] for s in sites} == {1}
    assert {(s["publish_time"], s["timezone"], s["max_in_article_images"]) for s in sites} == {
        ("08:15", "Europe/Berlin", 3)
    }

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE igny8_sites SET schedule_interval = 'every_2_days'"))
    engine.dispose()
    downgrade(url, "0002")
    sites = _sites(url)
    assert [s["schedule_interval"] for s in sites] == ["daily"] * 3
    assert all("max_posts_per_day" not in s for s in sites)
    engine = make_engine(url)
    assert "igny8_automation_configs" not in sa.inspect(engine).get_table_names()
    engine.dispose()
    upgrade(url)
    assert len(_sites(url)) == 3


def test_enabling_the_schedule_without_temporal_is_a_503_and_saves_nothing(
    client: TestClient, owner: tuple[int, str], site_url: str
) -> None:
    _, key = owner
    body = {"schedule_enabled": True, "schedule_time": "07:00", "content_batch_size": 3}
    answer = client.put(site_url, json=body, headers=auth(key))
    assert answer.status_code == 503, answer.text
    stored = client.get(site_url, headers=auth(key)).json()
    assert stored["schedule_enabled"] is False and stored["content_batch_size"] == 10
