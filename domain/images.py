"""Image-batch rules shared by the API (quote, 402/422) and the plan activity."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from domain.pricing import ModelPricing, image_credits, load_billing_defaults, load_model
from models.pipeline import Content, Image, Task
from models.runs import ImageBatch
from models.sites import Site

TASKS = Task.__table__
CONTENT = Content.__table__
IMAGES = Image.__table__
SITES = Site.__table__
BATCHES = ImageBatch.__table__


@dataclass(frozen=True)
class BatchQuote:
    pricing: ModelPricing
    in_article: int
    images: int
    credits: int
    missing_task_ids: list[int]
    tasks_without_content: list[int]
    site_id: int | None


def resolve_image_model(
    conn: Connection, requested: str | None, site: object | None
) -> ModelPricing:
    """Request, then the site's image model, then the billing default; must be an active image model."""
    name = (
        requested or getattr(site, "image_model", None) or load_billing_defaults(conn).image_model
    )
    return load_model(conn, name, "image")


def in_article_count(requested: int | None, site: object | None) -> int:
    if requested is not None:
        return requested
    return int(getattr(site, "max_in_article_images", 0) or 0)


def quote_batch(
    conn: Connection,
    account_id: int,
    task_ids: list[int],
    model: str | None,
    max_in_article_images: int | None,
) -> BatchQuote:
    """How many images a batch would make and what it would cost, before starting it.
    Images already generated for a slot are not made (or charged) again, nor are images
    another running batch has claimed: the plan leaves those to that batch."""
    tasks = conn.execute(
        select(TASKS.c.id, TASKS.c.site_id).where(
            TASKS.c.id.in_(task_ids), TASKS.c.account_id == account_id
        )
    ).all()
    found = {t.id for t in tasks}
    with_content = set(
        conn.execute(select(CONTENT.c.task_id).where(CONTENT.c.task_id.in_(found))).scalars()
    )
    site_id = tasks[0].site_id if tasks else None
    site = conn.execute(select(SITES).where(SITES.c.id == site_id)).first() if site_id else None
    pricing = resolve_image_model(conn, model, site)
    in_article = in_article_count(max_in_article_images, site)
    slots = (IMAGES.c.task_id.in_(with_content), IMAGES.c.position <= in_article)
    done = conn.execute(
        select(func.count()).where(*slots, IMAGES.c.status == "generated")
    ).scalar_one()
    claimed = conn.execute(
        select(func.count())
        .select_from(IMAGES.join(BATCHES, IMAGES.c.batch_id == BATCHES.c.batch_id))
        .where(*slots, IMAGES.c.status == "pending", BATCHES.c.status == "running")
    ).scalar_one()
    images = len(with_content) * (1 + in_article) - done - claimed
    return BatchQuote(
        pricing=pricing,
        in_article=in_article,
        images=images,
        credits=image_credits(pricing, images),
        missing_task_ids=sorted(set(task_ids) - found),
        tasks_without_content=sorted(found - with_content),
        site_id=site_id,
    )
