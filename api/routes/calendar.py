"""The publishing calendar and the workflow counts of a site.

Both are reads, so they run on `engine.connect()`: on SQLite a read transaction that never
takes the write lock (models/db.py), on PostgreSQL a plain snapshot.

Calendar (the seed plan's issue 7): one response serves the calendar view and the list
view, so the two can never disagree: `items` is every item in the range in time order,
`days` the same items grouped by local day (only days that have items). Days are the
site's timezone's, because "Tuesday" means the site's Tuesday, not UTC's. An item stands
on the calendar at its slot, or when it went out once published; scheduled, publishing,
published and failed items are shown (a failed one keeps its slot so the user sees what
did not go out).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime, BaseModel
from sqlalchemy import Connection, Row, select

from api.deps import CurrentAccountId, EngineDep
from api.errors import error_responses, unprocessable
from api.schemas import INT32_MAX
from api.scoping import SiteIdPath
from domain import review, stats
from models.pipeline import Content
from models.sites import Site

router = APIRouter(prefix="/sites", tags=["calendar"], responses=error_responses(401, 404))

CONTENT = Content.__table__
SITES = Site.__table__
MAX_CALENDAR_DAYS = 366
CALENDAR_STATUSES = ("scheduled", "publishing", "published", "failed")


class CalendarItem(BaseModel):
    id: int
    title: str
    status: str
    site_status: str
    scheduled_publish_at: datetime | None
    published_at: datetime | None
    external_url: str | None
    at: datetime  # where it stands on the calendar (see the module docstring)
    day: date  # `at`'s date in the site's timezone


class Calendar(BaseModel):
    site_id: int
    timezone: str
    start: date
    end: date
    days: dict[str, list[CalendarItem]]
    items: list[CalendarItem]


def site_or_404(conn: Connection, site_id: int, account_id: int) -> Row[Any]:
    """The account's site row, or the 404 another account's site gets (api/scoping.py)."""
    row = conn.execute(
        select(SITES).where(SITES.c.id == site_id, SITES.c.account_id == account_id)
    ).first()
    if row is None:
        raise HTTPException(status_code=404, detail=f"Site {site_id} not found")
    return row


@router.get("/{site_id}/calendar", response_model=Calendar)
def calendar(
    site_id: SiteIdPath,
    account_id: CurrentAccountId,
    engine: EngineDep,
    start: Annotated[date, Query(description="First local day, YYYY-MM-DD (included)")],
    end: Annotated[date, Query(description="Last local day, YYYY-MM-DD (included)")],
) -> Calendar:
    """Scheduled and published items from `start` to `end` (at most 366 days), by day
    in the site's timezone and as one list."""
    _check_range(start, end)
    with engine.connect() as conn:
        site = site_or_404(conn, site_id, account_id)
        tz = ZoneInfo(site.timezone)
        items = calendar_items(conn, site.id, tz, start, end)
    days: dict[str, list[CalendarItem]] = {}
    for item in items:
        days.setdefault(item.day.isoformat(), []).append(item)
    return Calendar(
        site_id=site.id, timezone=site.timezone, start=start, end=end, days=days, items=items
    )


def calendar_items(
    conn: Connection, site_id: int, tz: ZoneInfo, start: date, end: date
) -> list[CalendarItem]:
    """The site's calendar items whose local day is in [start, end], in time order."""
    first, _ = review.day_bounds(start, tz)
    _, after = review.day_bounds(end, tz)
    at = review.calendar_instant()
    rows = conn.execute(
        select(
            CONTENT.c.id,
            CONTENT.c.title,
            CONTENT.c.status,
            CONTENT.c.site_status,
            CONTENT.c.scheduled_publish_at,
            CONTENT.c.published_at,
            CONTENT.c.external_url,
            at.label("at"),
        )
        .where(
            CONTENT.c.site_id == site_id,
            CONTENT.c.site_status.in_(CALENDAR_STATUSES),
            at >= first,
            at < after,
        )
        .order_by(at, CONTENT.c.id)
    ).all()
    return [CalendarItem(**row._asdict(), day=row.at.astimezone(tz).date()) for row in rows]


def _check_range(start: date, end: date) -> None:
    if end < start:
        raise unprocessable(
            f"end ({end.isoformat()}) is before start ({start.isoformat()})", ("query", "end")
        )
    if (end - start).days + 1 > MAX_CALENDAR_DAYS:
        raise unprocessable(
            f"the range may cover at most {MAX_CALENDAR_DAYS} days", ("query", "end")
        )


@router.get("/{site_id}/workflow-stats", response_model=stats.WorkflowStats)
def workflow_stats(
    site_id: SiteIdPath,
    account_id: CurrentAccountId,
    engine: EngineDep,
    sector_id: Annotated[
        int | None, Query(ge=1, le=INT32_MAX, description="Count one sector only")
    ] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="Only rows created at or after this instant")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Only rows created before this instant")
    ] = None,
) -> stats.WorkflowStats:
    """Site-wide counts of every stage and the credits the site's AI work used: the same
    on every page; one sector or a time window only when asked (domain/stats.py)."""
    if since is not None and until is not None and until <= since:
        raise unprocessable("until must be later than since", ("query", "until"))
    with engine.connect() as conn:
        site = site_or_404(conn, site_id, account_id)
        if sector_id is not None and not stats.sector_of_site(conn, site.id, sector_id):
            raise unprocessable(
                f"sector {sector_id} is not a sector of site {site.id}", ("query", "sector_id")
            )
        scope = stats.Scope(site.id, site.account_id, sector_id, since, until)
        return stats.workflow_stats(conn, scope)
