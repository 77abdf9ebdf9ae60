"""Review and scheduling by hand: approve, reject, schedule (and reschedule), unschedule.

The rules live in domain/review.py; these routes only translate. Each move runs in one
write transaction (`engine.begin()`: SQLite takes its write lock up front) and answers
the content as it now is, with its images' alt texts and its review note, so a review
screen needs no second request. State errors are 409s that say what the content is
(e.g. "content 5 is published; it cannot be unscheduled"), bad input 422, another
account's content 404 (api/scoping.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import Connection, Engine, select
from temporalio.client import Client

from activities.publishing import poke_publisher
from api.deps import CurrentAccountId, EngineDep, SettingsDep, TemporalDep
from api.errors import error_responses, unprocessable
from api.schemas import ContentPublic
from api.scoping import id_path
from domain import review
from models.db import utcnow
from models.pipeline import Content, Image

log = logging.getLogger("igny8.api.content")
router = APIRouter(prefix="/content", tags=["review"], responses=error_responses(401, 404))

CONTENT = Content.__table__
IMAGES = Image.__table__
ContentIdPath = Annotated[int, id_path("The content's id")]
MOVE_RESPONSES = error_responses(409)


class RejectIn(BaseModel):
    reason: str = Field(
        min_length=1,
        max_length=review.MAX_REASON_LENGTH,
        description="Why it goes back to draft; kept as the content's review note",
    )


class ScheduleIn(BaseModel):
    at: AwareDatetime = Field(
        description="When to publish: a future instant with its timezone, "
        "e.g. 2030-01-31T09:00:00+01:00"
    )


class ImageAlt(BaseModel):
    id: int
    image_type: str
    position: int
    status: str
    alt_text: str


class ReviewNote(BaseModel):
    reason: str
    rejected_at: datetime


class ContentDetail(ContentPublic):
    """One piece of content with what a reviewer checks: SEO fields and alt texts."""

    meta_title: str
    slug: str
    focus_keyword: str
    target_keywords: list[str]
    review_note: ReviewNote | None = Field(
        description="The latest rejection's reason while the content is a draft"
    )
    images: list[ImageAlt]


@router.post("/{content_id}/approve", response_model=ContentDetail, responses=MOVE_RESPONSES)
def approve(
    content_id: ContentIdPath,
    account_id: CurrentAccountId,
    engine: EngineDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> ContentDetail:
    """Draft or review → approved; on a site that auto-schedules, also the next free
    publish slot."""

    def move(conn: Connection) -> None:
        review.approve(conn, account_id, content_id, utcnow())

    detail = _move(engine, account_id, content_id, move)
    _tell_publisher(temporal, settings.task_queue, account_id, detail)
    return detail


@router.post("/{content_id}/reject", response_model=ContentDetail, responses=MOVE_RESPONSES)
def reject(
    content_id: ContentIdPath,
    body: RejectIn,
    account_id: CurrentAccountId,
    engine: EngineDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> ContentDetail:
    """Review or approved → draft (a slot it held is given back), keeping the reason."""

    def move(conn: Connection) -> None:
        review.reject(conn, account_id, content_id, body.reason, utcnow())

    detail = _move(engine, account_id, content_id, move)
    _tell_publisher(temporal, settings.task_queue, account_id, detail)
    return detail


@router.post("/{content_id}/schedule", response_model=ContentDetail, responses=MOVE_RESPONSES)
def schedule(
    content_id: ContentIdPath,
    body: ScheduleIn,
    account_id: CurrentAccountId,
    engine: EngineDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> ContentDetail:
    """Approved content → scheduled at `at`; on scheduled content, a reschedule. Refused
    (409) when another item of the site is within a minute of `at` or its local day is
    at the site's `max_posts_per_day`."""

    def move(conn: Connection) -> None:
        review.schedule(conn, account_id, content_id, body.at, utcnow())

    detail = _move(engine, account_id, content_id, move)
    _tell_publisher(temporal, settings.task_queue, account_id, detail)
    return detail


@router.post("/{content_id}/unschedule", response_model=ContentDetail, responses=MOVE_RESPONSES)
def unschedule(
    content_id: ContentIdPath,
    account_id: CurrentAccountId,
    engine: EngineDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> ContentDetail:
    """Scheduled → approved and not published; the slot is free again."""

    def move(conn: Connection) -> None:
        review.unschedule(conn, account_id, content_id, utcnow())

    detail = _move(engine, account_id, content_id, move)
    _tell_publisher(temporal, settings.task_queue, account_id, detail)
    return detail


def _move(
    engine: Engine, account_id: int, content_id: int, move: Callable[[Connection], None]
) -> ContentDetail:
    """Run `move` and read the result in one transaction; domain refusals → HTTP."""
    try:
        with engine.begin() as conn:
            move(conn)
            detail = content_detail(conn, account_id, content_id)
    except review.ContentNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except review.StateConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except review.BadInput as exc:
        raise unprocessable(str(exc), ("body", exc.field)) from None
    return detail


def _tell_publisher(
    temporal: Client | None, task_queue: str, account_id: int, detail: ContentDetail
) -> None:
    """The site's schedule changed: its publisher reads the agenda again (signal-with-
    start). Without Temporal the change stands; the worker pokes every site with
    scheduled content when it starts, and a running publisher looks daily anyway."""
    if temporal is None:
        log.warning("Temporal unreachable: site %s's publisher not told", detail.site_id)
        return
    anyio.from_thread.run(poke_publisher, temporal, task_queue, account_id, detail.site_id)


def content_detail(conn: Connection, account_id: int, content_id: int) -> ContentDetail:
    """The account's content `content_id` with its images' alt texts, or a 404. Public
    so GET /content/{id} (api/routes/pipeline.py) can answer the same shape."""
    row = conn.execute(
        select(CONTENT).where(CONTENT.c.id == content_id, CONTENT.c.account_id == account_id)
    ).first()
    if row is None:
        raise HTTPException(status_code=404, detail=f"Content {content_id} not found")
    images = conn.execute(
        select(
            IMAGES.c.id, IMAGES.c.image_type, IMAGES.c.position, IMAGES.c.status, IMAGES.c.alt_text
        )
        .where(IMAGES.c.task_id == row.task_id, IMAGES.c.account_id == account_id)
        .order_by((IMAGES.c.image_type != "featured"), IMAGES.c.position, IMAGES.c.id)
    ).all()
    note = None
    if row.status == "draft" and (found := review.latest_rejection(conn, account_id, row.id)):
        note = ReviewNote(reason=found[0], rejected_at=found[1])
    return ContentDetail.model_validate(
        {
            **row._asdict(),
            "review_note": note,
            "images": [ImageAlt.model_validate(image._asdict()) for image in images],
        }
    )
