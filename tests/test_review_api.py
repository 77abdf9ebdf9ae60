"""Review and scheduling by hand (POST /content/{id}/approve, /reject, /schedule,
/unschedule) on SQLite and PostgreSQL: every move, every refusal and its status code,
the daily maximum in the site's timezone, and another account's content answering 404."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from api.main import create_app
from core.settings import Settings
from domain import publishing, review
from models import Content, Notification
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
    app: FastAPI = create_app(settings, connect_temporal=False)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def owner(engine: Engine) -> tuple[int, str]:
    return builders.account(engine, credits=100)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(client: TestClient, key: str, content_id: int, move: str, **body: Any) -> Any:
    return client.post(f"{API}/content/{content_id}/{move}", json=body or None, headers=auth(key))


def at_local(day: date, hour: int, minute: int, tz: str) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(tz))


def future_day(days: int = 30) -> date:
    return (utcnow() + timedelta(days=days)).date()


def stored(engine: Engine, content_id: int) -> Content:
    with Session(engine) as session:
        row = session.get(Content, content_id)
        assert row is not None
        return row


def parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---- approve -----------------------------------------------------------------------
@pytest.mark.parametrize("start", ["review", "draft"])
def test_approve_moves_review_or_draft_to_approved_with_alt_texts(
    client: TestClient, engine: Engine, owner: tuple[int, str], start: str
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    item = rb.content(engine, account_id, site.id, "Brewing", status=start)
    rb.image(engine, item, image_type="in_article", position=1, alt_text="A kettle")
    rb.image(engine, item, image_type="featured", position=0, alt_text="A cup of coffee")

    response = post(client, key, item.id, "approve")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["site_status"]) == ("approved", "not_published")
    assert body["scheduled_publish_at"] is None
    assert [i["alt_text"] for i in body["images"]] == ["A cup of coffee", "A kettle"]
    assert body["review_note"] is None
    assert stored(engine, item.id).status == "approved"


def test_approve_on_an_auto_scheduling_site_takes_the_next_free_slot(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(
        engine,
        account_id,
        auto_schedule=True,
        timezone="Europe/Berlin",
        publish_time="09:00",
        schedule_interval="every_2_days",
    )
    held = at_local(future_day(), 9, 0, "Europe/Berlin").astimezone(UTC)
    rb.content(
        engine,
        account_id,
        site.id,
        status="approved",
        site_status="scheduled",
        scheduled_publish_at=held,
    )
    item = rb.content(engine, account_id, site.id, status="review")

    body = post(client, key, item.id, "approve").json()

    (expected,) = publishing.next_slots(site, [held], 1, utcnow())
    assert (body["status"], body["site_status"]) == ("approved", "scheduled")
    assert parse(body["scheduled_publish_at"]) == expected == held + timedelta(days=2)


def test_concurrent_approvals_never_share_a_slot(engine: Engine, owner: tuple[int, str]) -> None:
    """Six approvals at once on an auto-scheduling site, two posts a day: the site row
    lock (PostgreSQL) or the write lock (SQLite) makes each see the others' slots."""
    account_id, _ = owner
    site = builders.site(engine, account_id, auto_schedule=True, max_posts_per_day=2)
    items = [rb.content(engine, account_id, site.id, status="review").id for _ in range(6)]

    def approve(content_id: int) -> None:
        with engine.begin() as conn:
            review.approve(conn, account_id, content_id, utcnow())

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(approve, items))

    slots = sorted(stored(engine, i).scheduled_publish_at for i in items)
    assert len(set(slots)) == 6
    assert max(Counter(slot.date() for slot in slots).values()) <= 2
    assert {stored(engine, i).site_status for i in items} == {"scheduled"}


def test_approve_refuses_approved_and_published_content(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    approved = rb.content(engine, account_id, site.id, status="approved")
    published = rb.content(engine, account_id, site.id, status="draft", site_status="published")

    again = post(client, key, approved.id, "approve")
    live = post(client, key, published.id, "approve")

    assert again.status_code == 409
    assert again.json()["detail"] == f"content {approved.id} is already approved"
    assert live.status_code == 409
    assert live.json()["detail"] == f"content {published.id} is published; it cannot be approved"


# ---- reject ------------------------------------------------------------------------
def test_reject_sends_back_to_draft_drops_the_slot_and_keeps_the_reason(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    slot = at_local(future_day(), 9, 0, "UTC")
    item = rb.content(
        engine,
        account_id,
        site.id,
        status="approved",
        site_status="scheduled",
        scheduled_publish_at=slot,
    )

    response = post(client, key, item.id, "reject", reason="  The intro repeats itself.  ")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["site_status"]) == ("draft", "not_published")
    assert body["scheduled_publish_at"] is None
    assert body["review_note"]["reason"] == "The intro repeats itself."
    with Session(engine) as session:
        note = session.exec(
            select(Notification).where(Notification.related_object_id == item.id)
        ).one()
    assert note.notification_type == "content_rejected"
    assert note.details["reason"] == "The intro repeats itself."
    approved_again = post(client, key, item.id, "approve").json()
    assert approved_again["review_note"] is None  # the note is for drafts only


def test_reject_validates_the_reason_and_refuses_drafts_and_published_content(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    in_review = rb.content(engine, account_id, site.id, status="review")
    draft = rb.content(engine, account_id, site.id, status="draft")
    live = rb.content(engine, account_id, site.id, status="approved", site_status="published")

    assert post(client, key, in_review.id, "reject").status_code == 422  # no body
    assert post(client, key, in_review.id, "reject", reason="").status_code == 422
    blank = post(client, key, in_review.id, "reject", reason="   ")
    assert blank.status_code == 422
    assert blank.json()["detail"][0]["loc"] == ["body", "reason"]
    assert post(client, key, in_review.id, "reject", reason="x" * 1001).status_code == 422
    assert stored(engine, in_review.id).status == "review"

    drafted = post(client, key, draft.id, "reject", reason="no")
    assert drafted.status_code == 409
    assert drafted.json()["detail"] == f"content {draft.id} is already a draft"
    published = post(client, key, live.id, "reject", reason="no")
    assert published.status_code == 409
    assert published.json()["detail"] == f"content {live.id} is published; it cannot be rejected"


# ---- schedule ----------------------------------------------------------------------
def test_schedule_and_reschedule_approved_content(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id, timezone="Europe/Berlin")
    item = rb.content(engine, account_id, site.id, status="approved")
    first = at_local(future_day(), 14, 30, "Europe/Berlin")
    second = first + timedelta(days=1, hours=2)

    scheduled = post(client, key, item.id, "schedule", at=first.isoformat())
    moved = post(client, key, item.id, "schedule", at=second.isoformat())
    same = post(client, key, item.id, "schedule", at=second.isoformat())  # its own slot

    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json()["site_status"] == "scheduled"
    assert parse(scheduled.json()["scheduled_publish_at"]) == first
    assert moved.status_code == 200, moved.text
    assert parse(moved.json()["scheduled_publish_at"]) == second
    assert same.status_code == 200, same.text
    row = stored(engine, item.id)
    assert (row.status, row.site_status, row.scheduled_publish_at) == (
        "approved",
        "scheduled",
        second.astimezone(UTC),
    )


def test_schedule_refuses_bad_instants_with_422(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    item = rb.content(engine, account_id, site.id, status="approved")
    naive = datetime.combine(future_day(), time(9)).isoformat()
    past = (utcnow() - timedelta(minutes=5)).isoformat()

    for body in ({}, {"at": naive}, {"at": past}, {"at": "tomorrow"}):
        response = post(client, key, item.id, "schedule", **body)
        assert response.status_code == 422, (body, response.text)
    past_answer = post(client, key, item.id, "schedule", at=past).json()
    assert "must be in the future" in past_answer["detail"][0]["msg"]
    assert stored(engine, item.id).site_status == "not_published"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (("review", "not_published"), "is in review; approve it before scheduling it"),
        (("draft", "not_published"), "is a draft; approve it before scheduling it"),
        (("approved", "published"), "is published; it cannot be scheduled"),
        (("approved", "publishing"), "is being published; it cannot be scheduled"),
    ],
)
def test_schedule_refuses_content_not_approved_or_already_out(
    client: TestClient,
    engine: Engine,
    owner: tuple[int, str],
    state: tuple[str, str],
    expected: str,
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    status, site_status = state
    item = rb.content(engine, account_id, site.id, status=status, site_status=site_status)
    at = at_local(future_day(), 9, 0, "UTC").isoformat()

    response = post(client, key, item.id, "schedule", at=at)

    assert response.status_code == 409
    assert response.json()["detail"] == f"content {item.id} {expected}"


def test_failed_content_can_be_scheduled_again(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    item = rb.content(engine, account_id, site.id, status="approved", site_status="failed")
    at = at_local(future_day(), 9, 0, "UTC")

    response = post(client, key, item.id, "schedule", at=at.isoformat())

    assert response.status_code == 200, response.text
    assert response.json()["site_status"] == "scheduled"


def test_schedule_refuses_a_slot_another_item_holds(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id, max_posts_per_day=5)
    slot = at_local(future_day(), 9, 0, "UTC")
    holder = rb.content(
        engine,
        account_id,
        site.id,
        status="approved",
        site_status="scheduled",
        scheduled_publish_at=slot,
    )
    item = rb.content(engine, account_id, site.id, status="approved")

    clash = post(client, key, item.id, "schedule", at=(slot + timedelta(seconds=30)).isoformat())
    next_minute = post(
        client, key, item.id, "schedule", at=(slot + timedelta(minutes=1)).isoformat()
    )

    assert clash.status_code == 409
    assert f"is taken: content {holder.id} is scheduled at" in clash.json()["detail"]
    assert next_minute.status_code == 200, next_minute.text


def test_unscheduling_frees_the_slot_for_another_item(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    slot = at_local(future_day(), 9, 0, "UTC")
    first = rb.content(engine, account_id, site.id, status="approved")
    second = rb.content(engine, account_id, site.id, status="approved")
    assert post(client, key, first.id, "schedule", at=slot.isoformat()).status_code == 200
    assert post(client, key, second.id, "schedule", at=slot.isoformat()).status_code == 409

    assert post(client, key, first.id, "unschedule").status_code == 200

    assert post(client, key, second.id, "schedule", at=slot.isoformat()).status_code == 200


def test_the_daily_maximum_counts_local_days_of_the_site(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    """Tokyo is UTC+9: 00:30 and 23:30 on one Tokyo day are on two UTC days, and 23:30
    on it and 00:30 on the next are on one UTC day. Only the local day counts."""
    account_id, key = owner
    tz = "Asia/Tokyo"
    site = builders.site(engine, account_id, timezone=tz, max_posts_per_day=2)
    day = future_day()
    morning = at_local(day, 0, 30, tz)
    published_day = at_local(day, 6, 0, tz)
    scheduled = rb.content(
        engine,
        account_id,
        site.id,
        status="approved",
        site_status="scheduled",
        scheduled_publish_at=morning,
    )
    went_out = rb.content(
        engine,
        account_id,
        site.id,
        status="approved",
        site_status="published",
        scheduled_publish_at=morning - timedelta(days=3),  # its slot was another day
        published_at=published_day,
    )
    item = rb.content(engine, account_id, site.id, status="approved")

    full = post(client, key, item.id, "schedule", at=at_local(day, 23, 30, tz).isoformat())
    next_day = post(
        client,
        key,
        item.id,
        "schedule",
        at=at_local(day + timedelta(days=1), 0, 30, tz).isoformat(),
    )

    assert full.status_code == 409
    assert full.json()["detail"] == (
        f"{day.isoformat()} ({tz}) already has 2 posts (content {scheduled.id}, "
        f"{went_out.id}); the site publishes at most 2 a day"
    )
    assert next_day.status_code == 200, next_day.text


# ---- unschedule --------------------------------------------------------------------
def test_unschedule_gives_the_slot_back(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    item = rb.content(
        engine,
        account_id,
        site.id,
        status="approved",
        site_status="scheduled",
        scheduled_publish_at=at_local(future_day(), 9, 0, "UTC"),
    )

    body = post(client, key, item.id, "unschedule").json()

    assert (body["status"], body["site_status"], body["scheduled_publish_at"]) == (
        "approved",
        "not_published",
        None,
    )
    again = post(client, key, item.id, "unschedule")
    assert again.status_code == 409
    assert again.json()["detail"] == f"content {item.id} is approved; it is not scheduled"


@pytest.mark.parametrize(
    ("site_status", "words"), [("published", "published"), ("publishing", "being published")]
)
def test_unschedule_refuses_content_that_is_out(
    client: TestClient, engine: Engine, owner: tuple[int, str], site_status: str, words: str
) -> None:
    account_id, key = owner
    site = builders.site(engine, account_id)
    item = rb.content(engine, account_id, site.id, status="approved", site_status=site_status)

    response = post(client, key, item.id, "unschedule")

    assert response.status_code == 409
    assert response.json()["detail"] == f"content {item.id} is {words}; it cannot be unscheduled"


# ---- scoping -----------------------------------------------------------------------
def test_another_accounts_content_is_not_found(
    client: TestClient, engine: Engine, owner: tuple[int, str]
) -> None:
    account_id, _ = owner
    _, stranger_key = builders.account(engine)
    site = builders.site(engine, account_id)
    item = rb.content(engine, account_id, site.id, status="approved")
    at = at_local(future_day(), 9, 0, "UTC").isoformat()
    moves: list[tuple[str, dict[str, Any]]] = [
        ("approve", {}),
        ("reject", {"reason": "no"}),
        ("schedule", {"at": at}),
        ("unschedule", {}),
    ]

    for move, body in moves:
        foreign = post(client, stranger_key, item.id, move, **body)
        missing = post(client, stranger_key, 999_999, move, **body)
        assert foreign.status_code == 404, (move, foreign.text)
        assert missing.status_code == 404, (move, missing.text)
        assert foreign.json() == {"detail": f"Content {item.id} not found"}
        assert missing.json() == {"detail": "Content 999999 not found"}
    assert stored(engine, item.id).site_status == "not_published"
    assert post(client, stranger_key, 0, "approve").status_code == 422
