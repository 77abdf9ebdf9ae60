"""GET /sites/{id}/calendar and GET /sites/{id}/workflow-stats on SQLite and PostgreSQL.

Calendar: the calendar and the list hold the same items, days are the site's local days
(Los Angeles across a daylight-saving change, Tokyo ahead of UTC), ranges are checked.
Stats: every count equals the same count taken directly in SQL, site-wide counts ignore
sectors unless one is asked, one sector's counts ignore the others, credits go to the site
whose objects they paid for, and another account's site is not found.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from api.main import create_app
from core.settings import Settings
from models.db import utcnow
from tests import builders
from tests import review_builders as rb

API = "/api/v1"


@pytest.fixture
def client(db_url: str, engine: Engine) -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=db_url,
        admin_api_key="test-admin",
    )
    with TestClient(create_app(settings, connect_temporal=False)) as test_client:
        yield test_client


@pytest.fixture
def owner(engine: Engine) -> tuple[int, str]:
    return builders.account(engine, credits=1000)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def local(day: date, hour: int, minute: int, tz: str) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(tz)).astimezone(UTC)


def calendar(client: TestClient, key: str, site_id: int, start: date, end: date) -> Any:
    query = {"start": start.isoformat(), "end": end.isoformat()}
    return client.get(f"{API}/sites/{site_id}/calendar", params=query, headers=auth(key))


def scheduled(engine: Engine, account_id: int, site_id: int, at: datetime, **fields: Any) -> int:
    values = {"status": "approved", "site_status": "scheduled", "scheduled_publish_at": at}
    values.update(fields)
    return rb.content(engine, account_id, site_id, f"post at {at.isoformat()}", **values).id


def ids_by_day(body: dict[str, Any]) -> dict[str, list[int]]:
    return {day: [item["id"] for item in items] for day, items in body["days"].items()}


def assert_list_matches_days(body: dict[str, Any]) -> None:
    """The list view is the calendar's items, day after day, in time order."""
    flattened = [item for day in sorted(body["days"]) for item in body["days"][day]]
    assert body["items"] == flattened
    instants = [datetime.fromisoformat(item["at"]) for item in body["items"]]
    assert instants == sorted(instants)


# ---- calendar ----------------------------------------------------------------------
def test_calendar_groups_los_angeles_days_across_daylight_saving(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    """2030-03-10 is the day Los Angeles springs forward (PST −8 → PDT −7): its 00:30 is
    08:30 UTC, its 23:30 is 06:30 UTC the next day; both are on the 10th."""
    account_id, key = owner
    tz = "America/Los_Angeles"
    site = builders.site(engine, account_id, timezone=tz)
    day = date(2030, 3, 10)
    before = scheduled(engine, account_id, site.id, local(day - timedelta(days=1), 23, 59, tz))
    early = scheduled(engine, account_id, site.id, local(day, 0, 30, tz))
    late = scheduled(engine, account_id, site.id, local(day, 23, 30, tz))
    went_out = scheduled(
        engine,
        account_id,
        site.id,
        local(day - timedelta(days=4), 9, 0, tz),  # placed by when it went out
        site_status="published",
        published_at=local(day + timedelta(days=1), 8, 0, tz),
        external_url="https://blog.example.com/went-out",
    )
    failed = scheduled(
        engine, account_id, site.id, local(day + timedelta(days=1), 12, 0, tz), site_status="failed"
    )
    after = scheduled(engine, account_id, site.id, local(day + timedelta(days=2), 0, 0, tz))
    rb.content(engine, account_id, site.id, status="approved")  # no slot: not on the calendar
    rb.content(engine, account_id, site.id, status="review")

    response = calendar(client, key, site.id, day, day + timedelta(days=1))

    assert response.status_code == 200, response.text
    body = response.json()
    assert ids_by_day(body) == {"2030-03-10": [early, late], "2030-03-11": [went_out, failed]}
    assert before not in [i["id"] for i in body["items"]]
    assert after not in [i["id"] for i in body["items"]]
    assert_list_matches_days(body)
    published = next(i for i in body["items"] if i["id"] == went_out)
    assert published["external_url"] == "https://blog.example.com/went-out"
    assert published["day"] == "2030-03-11"
    assert body["timezone"] == tz
    assert set(body["items"][0]) >= {
        "id",
        "title",
        "status",
        "site_status",
        "scheduled_publish_at",
        "published_at",
        "external_url",
    }


def test_calendar_days_in_tokyo_are_not_utc_days(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    """Tokyo is UTC+9: 00:10 on the 5th is 15:10 UTC on the 4th; 00:05 on the 7th is 15:05
    UTC on the 6th, outside a range that ends on the 6th."""
    account_id, key = owner
    tz = "Asia/Tokyo"
    site = builders.site(engine, account_id, timezone=tz)
    day = date(2031, 6, 5)
    first = scheduled(engine, account_id, site.id, local(day, 0, 10, tz))
    last = scheduled(engine, account_id, site.id, local(day + timedelta(days=1), 23, 50, tz))
    scheduled(engine, account_id, site.id, local(day + timedelta(days=2), 0, 5, tz))
    scheduled(engine, account_id, site.id, local(day - timedelta(days=1), 23, 55, tz))

    body = calendar(client, key, site.id, day, day + timedelta(days=1)).json()

    assert ids_by_day(body) == {"2031-06-05": [first], "2031-06-06": [last]}
    assert_list_matches_days(body)


def test_calendar_shows_only_its_own_site(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    other = builders.site(engine, account_id, name="Other")
    day = date(2030, 1, 15)
    mine = scheduled(engine, account_id, site.id, local(day, 9, 0, "UTC"))
    scheduled(engine, account_id, other.id, local(day, 10, 0, "UTC"))

    body = calendar(client, key, site.id, day, day).json()

    assert [i["id"] for i in body["items"]] == [mine]


def test_calendar_checks_its_range(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    url = f"{API}/sites/{site.id}/calendar"
    start = date(2030, 1, 1)

    backwards = calendar(client, key, site.id, start, start - timedelta(days=1))
    too_long = calendar(client, key, site.id, start, start + timedelta(days=366))
    a_year = calendar(client, key, site.id, start, start + timedelta(days=365))
    missing = client.get(url, params={"start": "2030-01-01"}, headers=auth(key))
    not_a_date = client.get(
        url, params={"start": "2030-02-30", "end": "2030-03-01"}, headers=auth(key)
    )

    assert backwards.status_code == 422
    assert backwards.json()["detail"][0]["msg"] == "end (2029-12-31) is before start (2030-01-01)"
    assert too_long.status_code == 422
    assert "at most 366 days" in too_long.json()["detail"][0]["msg"]
    assert a_year.status_code == 200
    assert missing.status_code == 422
    assert not_a_date.status_code == 422


def test_another_accounts_site_is_not_found(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, _ = owner
    _, stranger_key = builders.account(engine)
    site = builders.site(engine, account_id)
    day = date(2030, 1, 1)

    for response in (
        calendar(client, stranger_key, site.id, day, day),
        client.get(f"{API}/sites/{site.id}/workflow-stats", headers=auth(stranger_key)),
        calendar(client, stranger_key, 999_999, day, day),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["detail"].endswith("not found")


# ---- workflow stats ----------------------------------------------------------------
def stats(client: TestClient, key: str, site_id: int, **params: Any) -> dict[str, Any]:
    response = client.get(f"{API}/sites/{site_id}/workflow-stats", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


def counted_in_sql(
    engine: Engine, site_id: int, sector_id: int | None = None, since: datetime | None = None
) -> dict[str, Any]:
    """The same numbers, straight from SQL, in the API's shape (zeros left out)."""
    where = "t.site_id = :site"
    where += " AND t.sector_id = :sector" if sector_id is not None else ""
    where += " AND t.created_at >= :since" if since is not None else ""
    params = {"site": site_id, "sector": sector_id, "since": since and since.replace(tzinfo=None)}

    def grouped(table: str, column: str = "status", join: str = "") -> dict[str, int]:
        sql = f"SELECT t.{column}, COUNT(*) FROM {table} t {join} WHERE {where} GROUP BY t.{column}"
        with engine.connect() as conn:
            return {str(k): int(n) for k, n in conn.execute(text(sql), params)}

    def number(sql: str) -> int:
        with engine.connect() as conn:
            return int(conn.execute(text(sql), params).scalar_one())

    image_where = where.replace("t.sector_id", "task.sector_id").replace("t.", "i.")
    with engine.connect() as conn:
        image_rows = conn.execute(
            text(
                "SELECT i.status, COUNT(*) FROM igny8_images i "
                "JOIN igny8_tasks task ON task.id = i.task_id "
                f"WHERE {image_where} GROUP BY i.status"
            ),
            params,
        )
        images = {str(k): int(n) for k, n in image_rows}
    return {
        "keywords": grouped("igny8_keywords"),
        "clustered": number(
            f"SELECT COUNT(*) FROM igny8_keywords t WHERE {where} AND t.cluster_id IS NOT NULL"
        ),
        "clusters": grouped("igny8_clusters"),
        "ideas": grouped("igny8_content_ideas"),
        "tasks": grouped("igny8_tasks"),
        "content": grouped("igny8_content"),
        "content_site": grouped("igny8_content", "site_status"),
        "images": images,
    }


def from_api(body: dict[str, Any]) -> dict[str, Any]:
    def nonzero(counts: dict[str, int]) -> dict[str, int]:
        return {k: v for k, v in counts.items() if v}

    for stage in ("keywords", "clusters", "ideas", "tasks", "content", "images"):
        assert body[stage]["total"] == sum(body[stage]["by_status"].values())
    return {
        "keywords": nonzero(body["keywords"]["by_status"]),
        "clustered": body["keywords"]["clustered"],
        "clusters": nonzero(body["clusters"]["by_status"]),
        "ideas": nonzero(body["ideas"]["by_status"]),
        "tasks": nonzero(body["tasks"]["by_status"]),
        "content": nonzero(body["content"]["by_status"]),
        "content_site": nonzero(body["content"]["by_site_status"]),
        "images": nonzero(body["images"]["by_status"]),
    }


@pytest.fixture
def two_sectors(engine: Engine, owner: tuple[int, str]) -> dict[str, Any]:
    """A site with rows in sectors X and Y and with none; another site and another
    account with rows of their own."""
    account_id, key = owner
    site = builders.site(engine, account_id)
    x = rb.sector(engine, account_id, site.id, "X")
    y = rb.sector(engine, account_id, site.id, "Y")
    made = {
        "x": rb.pipeline(engine, account_id, site.id, x.id, 5),
        "y": rb.pipeline(engine, account_id, site.id, y.id, 3),
        "none": rb.pipeline(engine, account_id, site.id, None, 2),
    }
    other_site = builders.site(engine, account_id, name="Other")
    rb.pipeline(engine, account_id, other_site.id, None, 4)
    stranger, _ = builders.account(engine)
    rb.pipeline(engine, stranger, builders.site(engine, stranger).id, None, 3)
    return {
        "key": key,
        "account_id": account_id,
        "site": site,
        "x": x.id,
        "y": y.id,
        "other_site": other_site,
        "made": made,
    }


def test_stats_equal_counts_taken_in_sql(
    engine: Engine, client: TestClient, two_sectors: Any
) -> None:
    site, key = two_sectors["site"], two_sectors["key"]

    body = stats(client, key, site.id)

    assert from_api(body) == counted_in_sql(engine, site.id)
    assert body["keywords"]["total"] == 2 * (5 + 3 + 2)
    assert body["keywords"]["clustered"] == body["keywords"]["unclustered"] == 10
    assert body["content"]["by_status"] == {"draft": 3, "review": 3, "approved": 4}
    assert body["content"]["by_site_status"] == {
        "not_published": 6,
        "scheduled": 2,
        "publishing": 0,
        "published": 1,
        "failed": 1,
    }
    assert (body["images"]["generated"], body["images"]["failed"]) == (10, 6)
    assert body["images"]["pending"] == 4
    assert (body["sector_id"], body["since"], body["until"]) == (None, None, None)


def test_a_sector_counts_only_when_asked_and_only_its_own_rows(
    engine: Engine, client: TestClient, two_sectors: Any
) -> None:
    site, key, x, y = two_sectors["site"], two_sectors["key"], two_sectors["x"], two_sectors["y"]
    site_wide = stats(client, key, site.id)
    only_x = stats(client, key, site.id, sector_id=x)
    only_y = stats(client, key, site.id, sector_id=y)

    assert from_api(only_x) == counted_in_sql(engine, site.id, x)
    assert from_api(only_y) == counted_in_sql(engine, site.id, y)
    assert only_x["sector_id"] == x
    assert only_x["keywords"]["total"] == 10 and only_y["keywords"]["total"] == 6
    assert site_wide["keywords"]["total"] == 20  # X, Y and no sector: not any one sector

    account_id = two_sectors["account_id"]
    rb.pipeline(engine, account_id, site.id, y, 4)  # more work in Y

    assert stats(client, key, site.id, sector_id=x) == only_x
    grown = stats(client, key, site.id)
    assert grown["keywords"]["total"] == site_wide["keywords"]["total"] + 8
    assert from_api(grown) == counted_in_sql(engine, site.id)


def test_stats_count_a_time_window_only_when_asked(
    engine: Engine, client: TestClient, two_sectors: Any
) -> None:
    site, key, account_id = two_sectors["site"], two_sectors["key"], two_sectors["account_id"]
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    rb.pipeline(engine, account_id, site.id, two_sectors["x"], 2, created_at=long_ago)
    cutoff = datetime(2021, 1, 1, tzinfo=UTC)

    recent = stats(client, key, site.id, since=cutoff.isoformat())
    old = stats(client, key, site.id, until=cutoff.isoformat())
    everything = stats(client, key, site.id)

    assert from_api(recent) == counted_in_sql(engine, site.id, since=cutoff)
    assert recent["keywords"]["total"] == 20
    assert old["keywords"]["total"] == 4 and old["images"]["total"] == 4
    assert everything["keywords"]["total"] == 24
    assert datetime.fromisoformat(recent["since"]) == cutoff


def test_credits_go_to_the_site_whose_objects_they_paid_for(
    engine: Engine, client: TestClient, two_sectors: Any
) -> None:
    key, account_id = two_sectors["key"], two_sectors["account_id"]
    site, other = two_sectors["site"], two_sectors["other_site"]
    x, y = two_sectors["made"]["x"], two_sectors["made"]["y"]
    run = rb.automation_run(engine, account_id, site.id)
    other_run = rb.automation_run(engine, account_id, other.id)
    clustering = rb.task_log(engine, account_id, run.run_id, "auto_cluster")
    other_clustering = rb.task_log(engine, account_id, other_run.run_id, "auto_cluster")
    other_image = rb.pipeline(engine, account_id, other.id, None, 1).images[0]
    charges = [
        (2, "image_generation", ("image", x.images[0].id), None),
        (3, "image_prompt_extraction", ("content", y.content[0].id), None),
        (5, "content_generation", ("task", x.tasks[1].id), None),
        (7, "idea_generation", ("cluster", y.clusters[0].id), None),
        (11, "clustering", ("keyword-batch", 0), clustering.id),
        (13, "image_generation", ("image", other_image.id), None),  # the other site
        (17, "clustering", ("keyword-batch", 0), other_clustering.id),  # the other site
        (19, "content_generation", None, None),  # paid for nothing known
    ]
    for credits, operation, related, log_id in charges:
        rb.charge(engine, account_id, credits, operation, related, log_id)

    site_wide = stats(client, key, site.id)["credits"]
    in_x = stats(client, key, site.id, sector_id=two_sectors["x"])["credits"]
    in_y = stats(client, key, site.id, sector_id=two_sectors["y"])["credits"]
    others = stats(client, key, other.id)["credits"]
    later = stats(client, key, site.id, since=(utcnow() + timedelta(minutes=1)).isoformat())

    assert site_wide == {
        "used": 28,
        "by_operation": {
            "clustering": 11,
            "content_generation": 5,
            "idea_generation": 7,
            "image_generation": 2,
            "image_prompt_extraction": 3,
        },
    }
    assert in_x == {"used": 7, "by_operation": {"content_generation": 5, "image_generation": 2}}
    assert in_y == {
        "used": 10,
        "by_operation": {"idea_generation": 7, "image_prompt_extraction": 3},
    }
    assert others["used"] == 13 + 17
    with engine.connect() as conn:
        total = conn.execute(
            text(
                "SELECT SUM(credits_used) FROM igny8_billing_creditusagelog WHERE account_id = :a"
            ),
            {"a": account_id},
        ).scalar_one()
    assert int(total) == site_wide["used"] + others["used"] + 19
    assert later["credits"] == {"used": 0, "by_operation": {}}


def test_stats_refuse_bad_filters_with_422(
    client: TestClient, engine: Engine, two_sectors: Any
) -> None:
    site, key, account_id = two_sectors["site"], two_sectors["key"], two_sectors["account_id"]
    foreign_sector = rb.sector(engine, account_id, two_sectors["other_site"].id, "Elsewhere")
    url = f"{API}/sites/{site.id}/workflow-stats"
    cases = [
        {"sector_id": foreign_sector.id},
        {"sector_id": 0},
        {"since": "2030-01-01T00:00:00"},  # no timezone
        {"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"},
        {"since": "2030-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"},
    ]

    for params in cases:
        response = client.get(url, params=params, headers=auth(key))
        assert response.status_code == 422, (params, response.text)
    foreign = client.get(url, params={"sector_id": foreign_sector.id}, headers=auth(key))
    assert foreign.json()["detail"][0]["msg"] == (
        f"sector {foreign_sector.id} is not a sector of site {site.id}"
    )
