"""What the dashboard's pages read, from the same domain code and tables the JSON API
uses (blocking: call these from FastAPI's thread pool, as plain `def` routes do).

Nothing here decides a business rule: counts come from `domain.stats`, calendar items
from the calendar route's `calendar_items`, balances from the ledger. Every read is
scoped to the signed-in account; a site, run, batch or article of another account is a
404, the same as an unknown id.
"""

from __future__ import annotations

import calendar as calmod
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import HTTPException
from sqlalchemy import Connection, Engine, Row, func, select

from api.routes.calendar import CalendarItem, calendar_items
from domain import review, stats
from domain.automation import active_run
from models import (
    AIModelConfig,
    CreditTransaction,
    CreditUsageLog,
    Notification,
    Sector,
    Site,
)
from models.automation import AutomationConfig, AutomationConfigBase
from models.pipeline import Content, Image, Task
from models.runs import AutomationRun, ImageBatch, WordPressIntegration

SITES = Site.__table__
SECTORS = Sector.__table__
RUNS = AutomationRun.__table__
BATCHES = ImageBatch.__table__
CONTENT = Content.__table__
IMAGES = Image.__table__
TASKS = Task.__table__
NOTES = Notification.__table__
TXNS = CreditTransaction.__table__
USAGE = CreditUsageLog.__table__
MODELS = AIModelConfig.__table__
CONFIGS = AutomationConfig.__table__
WP = WordPressIntegration.__table__

RUN_STAGES = ("clustering", "ideas", "tasks", "content", "image_prompts", "images", "review")
REVIEW_TABS = ("review", "approved", "draft")


def not_found(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} not found")


@dataclass
class Frame:
    """What every page shows around its content: the sites, the chosen one, its sectors,
    the completion widget's counts and the unread notifications."""

    sites: list[Row[Any]]
    site: Row[Any] | None
    sectors: list[Row[Any]] = field(default_factory=list)
    sector_id: int | None = None
    stats: stats.WorkflowStats | None = None
    unread: int = 0


def frame(engine: Engine, account_id: int, site_id: int | None, sector_id: int | None) -> Frame:
    """The page frame for the account. `site_id` must be the account's (else 404); None
    picks its first site. The widget counts the whole site unless `sector_id` names one
    of its sectors (a foreign sector is ignored: the widget never shows other data)."""
    with engine.connect() as conn:
        sites = conn.execute(
            select(SITES.c.id, SITES.c.name, SITES.c.timezone)
            .where(SITES.c.account_id == account_id)
            .order_by(SITES.c.id)
        ).all()
        unread = conn.execute(
            select(func.count())
            .select_from(NOTES)
            .where(NOTES.c.account_id == account_id, NOTES.c.is_read.is_(False))
        ).scalar_one()
        if site_id is not None:
            site = next((s for s in sites if s.id == site_id), None)
            if site is None:
                raise not_found(f"Site {site_id}")
        else:
            site = sites[0] if sites else None
        if site is None:
            return Frame(sites=list(sites), site=None, unread=unread)
        sectors = conn.execute(
            select(SECTORS.c.id, SECTORS.c.name)
            .where(SECTORS.c.site_id == site.id)
            .order_by(SECTORS.c.id)
        ).all()
        if sector_id is not None and all(s.id != sector_id for s in sectors):
            sector_id = None
        counts = stats.workflow_stats(conn, stats.Scope(site.id, account_id, sector_id, None, None))
    return Frame(list(sites), site, list(sectors), sector_id, counts, unread)


def site_row(conn: Connection, account_id: int, site_id: int) -> Row[Any]:
    row = conn.execute(
        select(SITES).where(SITES.c.id == site_id, SITES.c.account_id == account_id)
    ).first()
    if row is None:
        raise not_found(f"Site {site_id}")
    return row


# ---- automation -------------------------------------------------------------------------
def runs_of_site(engine: Engine, account_id: int, site_id: int, limit: int = 20) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(RUNS)
                .where(RUNS.c.account_id == account_id, RUNS.c.site_id == site_id)
                .order_by(RUNS.c.started_at.desc(), RUNS.c.id.desc())
                .limit(limit)
            ).all()
        )


def active_run_of(engine: Engine, site_id: int) -> str | None:
    with engine.connect() as conn:
        return active_run(conn, site_id)


def run_site(engine: Engine, account_id: int, run_id: str) -> int:
    """The site of the account's run `run_id`, or a 404 (another account's run too)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(RUNS.c.site_id, RUNS.c.account_id).where(RUNS.c.run_id == run_id)
        ).first()
    if row is None or row.account_id != account_id:
        raise not_found(f"Automation run {run_id}")
    return int(row.site_id)


# ---- image batches ----------------------------------------------------------------------
def tasks_with_content(engine: Engine, account_id: int, site_id: int) -> list[Any]:
    """The site's tasks that have an article, with how many of their images exist."""
    generated = (
        select(func.count())
        .select_from(IMAGES)
        .where(IMAGES.c.task_id == TASKS.c.id, IMAGES.c.status == "generated")
        .scalar_subquery()
    )
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(TASKS.c.id, TASKS.c.title, generated.label("images"))
                .join(CONTENT, CONTENT.c.task_id == TASKS.c.id)
                .where(TASKS.c.account_id == account_id, TASKS.c.site_id == site_id)
                .order_by(TASKS.c.id.desc())
                .limit(200)
            ).all()
        )


def batches_of_site(engine: Engine, account_id: int, site_id: int, limit: int = 20) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(BATCHES)
                .where(BATCHES.c.account_id == account_id, BATCHES.c.site_id == site_id)
                .order_by(BATCHES.c.created_at.desc(), BATCHES.c.id.desc())
                .limit(limit)
            ).all()
        )


def batch_site(engine: Engine, account_id: int, batch_id: str) -> int | None:
    """The site of the account's batch (None for a run's batch not planned yet); 404 for
    an unknown batch or another account's."""
    with engine.connect() as conn:
        row = conn.execute(
            select(BATCHES.c.site_id, BATCHES.c.account_id).where(BATCHES.c.batch_id == batch_id)
        ).first()
    if row is None or row.account_id != account_id:
        raise not_found(f"Image batch {batch_id}")
    return row.site_id


# ---- content ----------------------------------------------------------------------------
def review_queue(engine: Engine, account_id: int, site_id: int, status: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(
                    CONTENT.c.id,
                    CONTENT.c.title,
                    CONTENT.c.status,
                    CONTENT.c.site_status,
                    CONTENT.c.word_count,
                    CONTENT.c.scheduled_publish_at,
                    CONTENT.c.published_at,
                    CONTENT.c.external_url,
                    CONTENT.c.meta_description,
                )
                .where(
                    CONTENT.c.account_id == account_id,
                    CONTENT.c.site_id == site_id,
                    CONTENT.c.status == status,
                )
                .order_by(CONTENT.c.created_at.desc(), CONTENT.c.id.desc())
                .limit(200)
            ).all()
        )


def review_counts(engine: Engine, account_id: int, site_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(CONTENT.c.status, func.count())
            .where(CONTENT.c.account_id == account_id, CONTENT.c.site_id == site_id)
            .group_by(CONTENT.c.status)
        ).all()
    found = {status: count for status, count in rows}
    return {tab: int(found.get(tab, 0)) for tab in REVIEW_TABS}


def content_images(engine: Engine, account_id: int, task_id: int) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(
                    IMAGES.c.id,
                    IMAGES.c.image_type,
                    IMAGES.c.position,
                    IMAGES.c.status,
                    IMAGES.c.alt_text,
                )
                .where(IMAGES.c.task_id == task_id, IMAGES.c.account_id == account_id)
                .order_by((IMAGES.c.image_type != "featured"), IMAGES.c.position, IMAGES.c.id)
            ).all()
        )


def content_row(
    engine: Engine, account_id: int, content_id: int
) -> tuple[Row[Any], tuple[str, datetime] | None]:
    """The account's article and, while it is a draft, its latest rejection's note."""
    with engine.connect() as conn:
        row = conn.execute(
            select(CONTENT).where(CONTENT.c.id == content_id, CONTENT.c.account_id == account_id)
        ).first()
        if row is None:
            raise not_found(f"Content {content_id}")
        note = review.latest_rejection(conn, account_id, row.id) if row.status == "draft" else None
    return row, note


# ---- calendar ---------------------------------------------------------------------------
@dataclass
class Month:
    first: date
    weeks: list[list[date]]
    items: list[CalendarItem]
    by_day: dict[date, list[CalendarItem]]
    prev: str
    next: str
    today: date


def month_of(value: str | None, tz: ZoneInfo) -> date:
    """The first day of `value` (YYYY-MM), or of the site's current month."""
    if value:
        try:
            year, month = (int(part) for part in value.split("-"))
            return date(year, month, 1)
        except ValueError:
            pass
    today = datetime.now(tz).date()
    return today.replace(day=1)


def month(engine: Engine, account_id: int, site_id: int, first: date) -> Month:
    """The month's items by the site's local day, and its weeks (Monday first) for the
    grid; the list view shows the same `items`."""
    with engine.connect() as conn:
        site = site_row(conn, account_id, site_id)
        tz = ZoneInfo(site.timezone)
        last = first.replace(day=calmod.monthrange(first.year, first.month)[1])
        items = calendar_items(conn, site.id, tz, first, last)
    by_day: dict[date, list[CalendarItem]] = {}
    for item in items:
        by_day.setdefault(item.day, []).append(item)
    weeks = calmod.Calendar(firstweekday=0).monthdatescalendar(first.year, first.month)
    prev = (first - timedelta(days=1)).replace(day=1)
    nxt = last + timedelta(days=1)
    return Month(
        first, weeks, items, by_day, f"{prev:%Y-%m}", f"{nxt:%Y-%m}", datetime.now(tz).date()
    )


# ---- settings ---------------------------------------------------------------------------
def settings_of(engine: Engine, account_id: int, site_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        site = site_row(conn, account_id, site_id)
        config = conn.execute(select(CONFIGS).where(CONFIGS.c.site_id == site.id)).first()
        wordpress = conn.execute(
            select(
                WP.c.base_url,
                WP.c.username,
                WP.c.last_tested_at,
                WP.c.last_test_ok,
                (WP.c.password_encrypted != "").label("has_password"),
            ).where(WP.c.site_id == site.id)
        ).first()
        models = conn.execute(
            select(MODELS.c.model_name, MODELS.c.model_type)
            .where(MODELS.c.is_active.is_(True))
            .order_by(MODELS.c.model_name)
        ).all()
    defaults = AutomationConfigBase().model_dump()
    automation = {k: getattr(config, k) for k in defaults} if config else defaults
    return {
        "site": site,
        "automation": automation,
        "wordpress": wordpress,
        "text_models": [m.model_name for m in models if m.model_type == "text"],
        "image_models": [m.model_name for m in models if m.model_type == "image"],
    }


# ---- credits ----------------------------------------------------------------------------
def credit_pages(engine: Engine, account_id: int, limit: int = 25) -> dict[str, list[Any]]:
    with engine.connect() as conn:
        txns = conn.execute(
            select(TXNS)
            .where(TXNS.c.account_id == account_id)
            .order_by(TXNS.c.id.desc())
            .limit(limit)
        ).all()
        usage = conn.execute(
            select(USAGE)
            .where(USAGE.c.account_id == account_id)
            .order_by(USAGE.c.id.desc())
            .limit(limit)
        ).all()
        by_operation = conn.execute(
            select(
                USAGE.c.operation_type,
                func.count().label("calls"),
                func.sum(USAGE.c.credits_used).label("credits"),
                func.sum(USAGE.c.cost_usd).label("cost_usd"),
            )
            .where(USAGE.c.account_id == account_id)
            .group_by(USAGE.c.operation_type)
            .order_by(USAGE.c.operation_type)
        ).all()
        notes = conn.execute(
            select(NOTES)
            .where(NOTES.c.account_id == account_id)
            .order_by(NOTES.c.id.desc())
            .limit(limit)
        ).all()
    return {
        "transactions": list(txns),
        "usage": list(usage),
        "by_operation": list(by_operation),
        "notifications": list(notes),
    }
