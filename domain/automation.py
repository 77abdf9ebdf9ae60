"""What an automation run works on, read from the database: every stage's unprocessed
items, so a later run picks up only what is still to do (DESIGN §2: each item at most
once per stage, across runs). Shared by the run's plan activity and the API.

The state of an item says which stage it waits for:
keyword without cluster → clustering; cluster not `ideas_generated` → ideas; idea `new`
→ a writer task; task `queued` (no content) → content; content without image prompts →
image prompts; content whose images are not all generated → images; `draft` content with
its images done → review (or approval and a publish slot).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, func, insert, select
from sqlalchemy.exc import IntegrityError

from models.db import utcnow
from models.pipeline import Cluster, Content, ContentIdea, Image, Keyword, Task
from models.runs import AutomationRun

KEYWORDS = Keyword.__table__
CLUSTERS = Cluster.__table__
IDEAS = ContentIdea.__table__
TASKS = Task.__table__
CONTENT = Content.__table__
IMAGES = Image.__table__
RUNS = AutomationRun.__table__
ACTIVE = ("running", "paused", "cancelling")


@dataclass(frozen=True)
class Backlog:
    keywords: list[int]  # unclustered, oldest first
    clusters: list[int]  # without ideas
    ideas: list[int]  # without a task
    tasks: list[int]  # without content
    prompts: list[tuple[int, int]]  # (content, task): no image prompts yet
    images: list[tuple[int, int]]  # (content, task): prompts written, images not all made
    review: list[int]  # draft content with every image generated


def backlog(
    conn: Connection, site_id: int, images_per_article: int, max_keywords: int | None
) -> Backlog:
    """Every stage's unprocessed items of the site, each list in id order."""
    keywords = select(KEYWORDS.c.id).where(
        KEYWORDS.c.site_id == site_id, KEYWORDS.c.cluster_id.is_(None)
    )
    keywords = keywords.order_by(KEYWORDS.c.id).limit(max_keywords)
    clusters = select(CLUSTERS.c.id).where(
        CLUSTERS.c.site_id == site_id, CLUSTERS.c.status != "ideas_generated"
    )
    ideas = select(IDEAS.c.id).where(IDEAS.c.site_id == site_id, IDEAS.c.status == "new")
    tasks = select(TASKS.c.id).where(
        TASKS.c.site_id == site_id,
        TASKS.c.status == "queued",
        ~TASKS.c.id.in_(select(CONTENT.c.task_id)),
    )
    drafts = conn.execute(
        select(CONTENT.c.id, CONTENT.c.task_id, CONTENT.c.image_prompts).where(
            CONTENT.c.site_id == site_id, CONTENT.c.status == "draft"
        )
    ).all()
    made = _generated_images(conn, [d.id for d in drafts if d.image_prompts])
    ready = [d for d in drafts if d.image_prompts]
    return Backlog(
        keywords=_ids(conn, keywords),
        clusters=_ids(conn, clusters.order_by(CLUSTERS.c.id)),
        ideas=_ids(conn, ideas.order_by(IDEAS.c.id)),
        tasks=_ids(conn, tasks.order_by(TASKS.c.id)),
        prompts=sorted((d.id, d.task_id) for d in drafts if not d.image_prompts),
        images=sorted((d.id, d.task_id) for d in ready if made.get(d.id, 0) < images_per_article),
        review=sorted(d.id for d in ready if made.get(d.id, 0) >= images_per_article),
    )


def _ids(conn: Connection, stmt: object) -> list[int]:
    return list(conn.execute(stmt).scalars())  # type: ignore[call-overload]


def _generated_images(conn: Connection, content_ids: list[int]) -> dict[int, int]:
    if not content_ids:
        return {}
    rows = conn.execute(
        select(IMAGES.c.content_id, func.count())
        .where(IMAGES.c.content_id.in_(content_ids), IMAGES.c.status == "generated")
        .group_by(IMAGES.c.content_id)
    ).all()
    return {content_id: n for content_id, n in rows}


def chunks(ids: list[int], size: int) -> list[list[int]]:
    size = max(1, size)
    return [ids[i : i + size] for i in range(0, len(ids), size)]


@dataclass(frozen=True)
class RunSettings:
    """The site's automation config as a run uses it (defaults where none is stored)."""

    keywords_per_cluster_call: int = 20
    ideas_batch_size: int = 10
    content_batch_size: int = 10
    image_prompts_batch_size: int = 10
    image_batch_size: int = 5
    max_keywords_per_run: int | None = None
    text_model: str | None = None
    image_model: str | None = None
    max_in_article_images: int | None = None


def run_settings(conn: Connection, site_id: int) -> RunSettings:
    from models.automation import AutomationConfig

    table = AutomationConfig.__table__
    row = conn.execute(select(table).where(table.c.site_id == site_id)).mappings().first()
    if row is None:
        return RunSettings()
    return RunSettings(**{k: row[k] for k in RunSettings.__dataclass_fields__ if k in row})


def claim_site(
    conn: Connection, run_id: str, account_id: int, site_id: int, budget: int | None
) -> bool:
    """Insert the run's row holding the site: False if another run of the site is active.
    `active_site_id` is unique and set only while a run is active, so of two starts at
    once exactly one wins, on both databases."""
    try:
        with conn.begin_nested():
            conn.execute(
                insert(RUNS).values(
                    run_id=run_id,
                    account_id=account_id,
                    site_id=site_id,
                    active_site_id=site_id,
                    status="running",
                    budget_credits=budget,
                    credits_used=0,
                    cost_usd=Decimal("0"),
                    summary={},
                    started_at=utcnow(),
                )
            )
    except IntegrityError:
        return False
    return True


def active_run(conn: Connection, site_id: int) -> str | None:
    return conn.execute(
        select(RUNS.c.run_id).where(RUNS.c.active_site_id == site_id)
    ).scalar_one_or_none()
