"""Review and scheduling by hand: approve, reject, schedule (and reschedule), unschedule.

The automation run's last stage approves and schedules by the site's settings
(activities/automation.py `finalize_content`); these are the same moves made by a person,
under the same slot rules (domain/publishing.py), so the calendar never depends on who
scheduled an item.

The states (DESIGN §2): `status` draft → review → approved, and `site_status`
not_published → scheduled → publishing → published (or failed). The moves:

| move | allowed from | result |
|---|---|---|
| approve | draft, review (not publishing/published) | approved; with `auto_schedule`, the next free slot (`next_slots`) |
| reject | review, approved (not publishing/published) | draft, not_published, no slot; the reason kept |
| schedule | approved, not publishing/published | scheduled at the given instant (again: a reschedule) |
| unschedule | scheduled | approved, not_published, no slot |

A hand-picked instant must be in the future, at least `MIN_SLOT_GAP` away from every other
scheduled item of the site (so two posts never share a slot), and its local day (the
site's timezone) must hold fewer than `max_posts_per_day` scheduled, publishing or
published items. It need not fall on the interval grid: a person may publish off-rhythm.

Why the site row is locked first: two moves on one site (two approvals under
`auto_schedule`, or a schedule racing an approval) would both read the same free slot;
locking the site serialises them on PostgreSQL, and SQLite write transactions are already
serial (`BEGIN IMMEDIATE`). The content row is locked too, and every write is conditional
on the state that was read, so a publisher that moved the item meanwhile is a conflict,
never a lost update.

Where a rejection's reason lives: there is no column for it on content yet (a
`review_note` column is the proper home), so each rejection is a `content_rejected`
notification of the account, linked to the content, with the reason in `details`; the
latest one is the content's review note while it is a draft.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row, case, func, insert, select, type_coerce, update

from domain import publishing
from models.db import UTCDateTime
from models.logs import Notification
from models.pipeline import Content
from models.sites import Site

CONTENT = Content.__table__
SITES = Site.__table__
NOTES = Notification.__table__

MIN_SLOT_GAP = timedelta(minutes=1)
MAX_REASON_LENGTH = 1000
REJECTED = "content_rejected"  # notification_type of a rejection (it holds the reason)
LIVE = ("publishing", "published")  # site_status of content WordPress has or is getting
DAY_HOLDERS = ("scheduled", "publishing", "published")  # count toward a day's maximum


class ReviewError(Exception):
    """A move refused; the message is written for the user."""


class ContentNotFound(ReviewError):
    """No such content in the account (another account's content is not found either)."""


class StateConflict(ReviewError):
    """The content's state does not allow the move (an HTTP 409)."""


class SlotConflict(StateConflict):
    """The instant is taken, or its day is full (an HTTP 409)."""


class BadInput(ReviewError):
    """The request itself is wrong (an HTTP 422); `field` names the body field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


# ---- the moves ------------------------------------------------------------------------
def approve(conn: Connection, account_id: int, content_id: int, now: datetime) -> None:
    """Draft or review → approved; on an auto-scheduling site, also the next free slot."""
    site, row = _locked(conn, account_id, content_id)
    if row.status == "approved":
        raise StateConflict(f"content {content_id} is already approved")
    _refuse_live(row, "approved")
    values: dict[str, Any] = {"status": "approved"}
    if site.auto_schedule and row.site_status == "not_published":
        taken = publishing.taken_slots(conn, site.id)
        (slot,) = publishing.next_slots(site, taken, 1, now)
        values.update(site_status="scheduled", scheduled_publish_at=slot)
    _write(conn, row, values, now)


def reject(conn: Connection, account_id: int, content_id: int, reason: str, now: datetime) -> None:
    """Review or approved → draft, dropping any slot; the reason is kept (module doc)."""
    reason = _clean_reason(reason)
    site, row = _locked(conn, account_id, content_id)
    _refuse_live(row, "rejected")
    if row.status == "draft":
        raise StateConflict(f"content {content_id} is already a draft")
    values = {"status": "draft", "site_status": "not_published", "scheduled_publish_at": None}
    _write(conn, row, values, now)
    _record_rejection(conn, row, site.id, reason, now)


def schedule(
    conn: Connection, account_id: int, content_id: int, at: datetime, now: datetime
) -> None:
    """Approved content → scheduled at `at` (a reschedule when it already was)."""
    at = _future_instant(at, now)
    site, row = _locked(conn, account_id, content_id)
    _refuse_live(row, "scheduled")
    if row.status != "approved":
        raise StateConflict(
            f"content {content_id} is {describe(row)}; approve it before scheduling it"
        )
    check_slot(conn, site, row.id, at)
    _write(conn, row, {"site_status": "scheduled", "scheduled_publish_at": at}, now)


def unschedule(conn: Connection, account_id: int, content_id: int, now: datetime) -> None:
    """Scheduled → approved and not_published: the slot is given back."""
    _, row = _locked(conn, account_id, content_id)
    _refuse_live(row, "unscheduled")
    if row.site_status != "scheduled":
        raise StateConflict(f"content {content_id} is {describe(row)}; it is not scheduled")
    _write(conn, row, {"site_status": "not_published", "scheduled_publish_at": None}, now)


# ---- slot rules ------------------------------------------------------------------------
def check_slot(conn: Connection, site: Row[Any], content_id: int, at: datetime) -> None:
    """`SlotConflict` naming the item in the way, or the full day and what fills it."""
    clash = conn.execute(
        select(CONTENT.c.id, CONTENT.c.scheduled_publish_at)
        .where(
            CONTENT.c.site_id == site.id,
            CONTENT.c.id != content_id,
            CONTENT.c.site_status.in_(("scheduled", "publishing")),
            CONTENT.c.scheduled_publish_at > at - MIN_SLOT_GAP,
            CONTENT.c.scheduled_publish_at < at + MIN_SLOT_GAP,
        )
        .order_by(CONTENT.c.scheduled_publish_at, CONTENT.c.id)
        .limit(1)
    ).first()
    if clash is not None:
        raise SlotConflict(
            f"{iso(at)} is taken: content {clash.id} is scheduled at "
            f"{iso(clash.scheduled_publish_at)} (a site's posts go out at least a minute apart)"
        )
    tz = ZoneInfo(site.timezone)
    day = at.astimezone(tz).date()
    others = day_items(conn, site.id, day, tz, exclude=content_id)
    if len(others) >= site.max_posts_per_day:
        listed = ", ".join(str(i) for i in others)
        raise SlotConflict(
            f"{day.isoformat()} ({site.timezone}) already has {len(others)} posts "
            f"(content {listed}); the site publishes at most {site.max_posts_per_day} a day"
        )


def day_items(
    conn: Connection, site_id: int, day: date, tz: ZoneInfo, exclude: int | None = None
) -> list[int]:
    """Ids of the site's items that occupy local `day`: scheduled or publishing there, or
    published there."""
    start, end = day_bounds(day, tz)
    when = calendar_instant()
    stmt = select(CONTENT.c.id).where(
        CONTENT.c.site_id == site_id,
        CONTENT.c.site_status.in_(DAY_HOLDERS),
        when >= start,
        when < end,
    )
    if exclude is not None:
        stmt = stmt.where(CONTENT.c.id != exclude)
    return list(conn.execute(stmt.order_by(CONTENT.c.id)).scalars())


def calendar_instant() -> Any:
    """When an item stands on the calendar: published items when they went out (their
    slot if that is unknown), all others at their slot."""
    published_at = func.coalesce(CONTENT.c.published_at, CONTENT.c.scheduled_publish_at)
    instant = case(
        (CONTENT.c.site_status == "published", published_at),
        else_=CONTENT.c.scheduled_publish_at,
    )
    return type_coerce(instant, UTCDateTime())  # binds and results as the columns do


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of local `day` as UTC instants; a midnight that daylight saving skips
    starts the day at the jump (publishing.local_instant)."""
    start = publishing.local_instant(datetime.combine(day, time()), tz)
    end = publishing.local_instant(datetime.combine(day + timedelta(days=1), time()), tz)
    return start, end


# ---- the review note -------------------------------------------------------------------
def latest_rejection(
    conn: Connection, account_id: int, content_id: int
) -> tuple[str, datetime] | None:
    """(reason, when) of the content's latest rejection, if it was ever rejected."""
    row = conn.execute(
        select(NOTES.c.details, NOTES.c.created_at)
        .where(
            NOTES.c.account_id == account_id,
            NOTES.c.notification_type == REJECTED,
            NOTES.c.related_object_type == "content",
            NOTES.c.related_object_id == content_id,
        )
        .order_by(NOTES.c.created_at.desc(), NOTES.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return str((row.details or {}).get("reason", "")), row.created_at


def _record_rejection(
    conn: Connection, row: Row[Any], site_id: int, reason: str, now: datetime
) -> None:
    conn.execute(
        insert(NOTES).values(
            account_id=row.account_id,
            notification_type=REJECTED,
            title="Content sent back to draft",
            message=f"“{row.title}” was sent back to draft: {reason}",
            severity="warning",
            details={"reason": reason, "content_id": row.id, "site_id": site_id},
            related_object_type="content",
            related_object_id=row.id,
            is_read=False,
            idempotency_key=f"{REJECTED}:{row.id}:{uuid.uuid4().hex}",
            created_at=now,
        )
    )


# ---- helpers ---------------------------------------------------------------------------
def describe(row: Row[Any]) -> str:
    """The content's state in words, for messages: "published", "in review", ..."""
    if row.site_status == "published":
        return "published"
    if row.site_status == "publishing":
        return "being published"
    if row.site_status == "scheduled":
        return f"scheduled for {iso(row.scheduled_publish_at)}"
    if row.site_status == "failed":
        return f"{row.status} (its last publish failed)"
    words = {"draft": "a draft", "review": "in review", "approved": "approved"}
    return words.get(row.status, row.status)


def iso(instant: datetime | None) -> str:
    return instant.astimezone(UTC).isoformat() if instant is not None else "an unknown time"


def _locked(conn: Connection, account_id: int, content_id: int) -> tuple[Row[Any], Row[Any]]:
    """The content's site and the content, both locked (site first: module doc)."""
    site_id = conn.execute(
        select(CONTENT.c.site_id).where(
            CONTENT.c.id == content_id, CONTENT.c.account_id == account_id
        )
    ).scalar_one_or_none()
    if site_id is None:
        raise ContentNotFound(f"Content {content_id} not found")
    site = conn.execute(select(SITES).where(SITES.c.id == site_id).with_for_update()).one()
    row = conn.execute(select(CONTENT).where(CONTENT.c.id == content_id).with_for_update()).one()
    return site, row


def _refuse_live(row: Row[Any], verb: str) -> None:
    if row.site_status in LIVE:
        raise StateConflict(f"content {row.id} is {describe(row)}; it cannot be {verb}")


def _write(conn: Connection, row: Row[Any], values: dict[str, Any], now: datetime) -> None:
    """Apply `values` only if the content is still in the state that was checked."""
    done = conn.execute(
        update(CONTENT)
        .where(
            CONTENT.c.id == row.id,
            CONTENT.c.status == row.status,
            CONTENT.c.site_status == row.site_status,
        )
        .values(**values, updated_at=now)
    ).rowcount
    if done != 1:
        raise StateConflict(f"content {row.id} changed meanwhile; reload it and retry")


def _future_instant(at: datetime, now: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise BadInput("at must carry a timezone (e.g. 2030-01-31T09:00:00+01:00)", "at")
    at = at.astimezone(UTC)
    if at <= now:
        raise BadInput(f"at must be in the future (now is {iso(now)})", "at")
    return at


def _clean_reason(reason: str) -> str:
    cleaned = reason.strip()
    if not cleaned:
        raise BadInput("reason must not be blank", "reason")
    if len(cleaned) > MAX_REASON_LENGTH:
        raise BadInput(f"reason must be at most {MAX_REASON_LENGTH} characters", "reason")
    return cleaned


__all__ = [
    "MIN_SLOT_GAP",
    "BadInput",
    "ContentNotFound",
    "ReviewError",
    "SlotConflict",
    "StateConflict",
    "approve",
    "calendar_instant",
    "check_slot",
    "day_bounds",
    "day_items",
    "latest_rejection",
    "reject",
    "schedule",
    "unschedule",
]
