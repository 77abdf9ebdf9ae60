"""Site-wide workflow counts for the completion widget (GET /sites/{id}/workflow-stats).

Why on the server and site-wide: igny8's widget counted on the client with the page's
active sector, so the same widget showed different numbers on different pages (the seed
plan's issue 6). Here the counts are the whole site's unless the caller names a sector,
whatever sector a client has active, and they come from seven GROUP BY queries (one per
table), however many rows there are.

What is counted, for one site:

- keywords: all, by `status`, and clustered (linked to a cluster) / unclustered;
- clusters, ideas, tasks: all and by `status`;
- content: all, by `status` (draft / review / approved) and by `site_status`
  (not_published / scheduled / publishing / published / failed), every value listed,
  zeros included;
- images: all, by `status`, and `generated` / `failed` / `pending` on their own;
- credits: the credits deducted for the site's AI work, by usage `operation_type`. A
  usage log is the site's when the object it paid for is: an `image`, `content`, `task`
  or `cluster` row of the site (`related_object_type` / `related_object_id`, which the
  engine writes for every charge); a keyword batch of the clustering stage names no row
  (its id is the batch's number), so its charge is the site's when its AI task log
  belongs to one of the site's automation runs (`workflow_id` = the run's `run_id`,
  and clustering only runs inside runs). Refunds are not subtracted: this is what the
  work cost, not what the account paid in the end.

Filters, only when asked:

- `sector_id`: rows of that sector. Images follow their task's sector, credits their
  object's sector; a clustering batch belongs to no single sector, so its credits count
  only site-wide.
- `since` / `until` (aware instants, `since` included, `until` excluded): rows created in
  the window; for credits, deductions made in it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Table, and_, case, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement

from models.billing import CreditUsageLog
from models.logs import AITaskLog
from models.pipeline import (
    CONTENT_STATUSES,
    SITE_STATUSES,
    Cluster,
    Content,
    ContentIdea,
    Image,
    Keyword,
    Task,
)
from models.runs import AutomationRun
from models.sites import Sector

KEYWORDS: Table = Keyword.__table__
CLUSTERS: Table = Cluster.__table__
IDEAS: Table = ContentIdea.__table__
TASKS: Table = Task.__table__
CONTENT: Table = Content.__table__
IMAGES: Table = Image.__table__
USAGE: Table = CreditUsageLog.__table__
TASK_LOGS: Table = AITaskLog.__table__
RUNS: Table = AutomationRun.__table__
SECTORS: Table = Sector.__table__

# related_object_type of a usage log → the table whose row it paid for.
PAID_FOR: dict[str, Table] = {
    "image": IMAGES,
    "content": CONTENT,
    "task": TASKS,
    "cluster": CLUSTERS,
}


class StageCounts(BaseModel):
    total: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)


class KeywordCounts(StageCounts):
    clustered: int = 0
    unclustered: int = 0


class ContentCounts(StageCounts):
    by_site_status: dict[str, int] = Field(default_factory=dict)


class ImageCounts(StageCounts):
    generated: int = 0
    failed: int = 0
    pending: int = 0


class CreditCounts(BaseModel):
    used: int = Field(0, description="Credits deducted for the site's AI work")
    by_operation: dict[str, int] = Field(default_factory=dict)


class WorkflowStats(BaseModel):
    site_id: int
    sector_id: int | None = Field(description="The sector counted, or null: the whole site")
    since: datetime | None
    until: datetime | None
    keywords: KeywordCounts
    clusters: StageCounts
    ideas: StageCounts
    tasks: StageCounts
    content: ContentCounts
    images: ImageCounts
    credits: CreditCounts


@dataclass(frozen=True)
class Scope:
    """Which rows count: the site's, maybe one sector's, maybe created in a window."""

    site_id: int
    account_id: int
    sector_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def window(self, created_at: Any) -> list[ColumnElement[bool]]:
        conditions = []
        if self.since is not None:
            conditions.append(created_at >= self.since)
        if self.until is not None:
            conditions.append(created_at < self.until)
        return conditions

    def rows_of(self, table: Table, sector_of: Any = None) -> list[ColumnElement[bool]]:
        """Conditions for `table`'s rows in scope; `sector_of` is the column holding the
        row's sector when it is not the table's own `sector_id`."""
        conditions = [table.c.site_id == self.site_id, *self.window(table.c.created_at)]
        if self.sector_id is not None:
            sector = table.c.sector_id if sector_of is None else sector_of
            conditions.append(sector == self.sector_id)
        return conditions


def sector_of_site(conn: Connection, site_id: int, sector_id: int) -> bool:
    """Is `sector_id` one of the site's sectors? (Another site's sector would count 0.)"""
    found = conn.execute(
        select(SECTORS.c.id).where(SECTORS.c.id == sector_id, SECTORS.c.site_id == site_id)
    ).first()
    return found is not None


def workflow_stats(conn: Connection, scope: Scope) -> WorkflowStats:
    """Every stage's counts for `scope` (module docstring), in seven queries."""
    return WorkflowStats(
        site_id=scope.site_id,
        sector_id=scope.sector_id,
        since=scope.since,
        until=scope.until,
        keywords=keyword_counts(conn, scope),
        clusters=status_counts(conn, CLUSTERS, scope),
        ideas=status_counts(conn, IDEAS, scope),
        tasks=status_counts(conn, TASKS, scope),
        content=content_counts(conn, scope),
        images=image_counts(conn, scope),
        credits=credit_counts(conn, scope),
    )


def status_counts(conn: Connection, table: Table, scope: Scope) -> StageCounts:
    rows = conn.execute(
        select(table.c.status, func.count()).where(*scope.rows_of(table)).group_by(table.c.status)
    ).all()
    return StageCounts(**_totals((row[0], row[1]) for row in rows))


def keyword_counts(conn: Connection, scope: Scope) -> KeywordCounts:
    # Literal SQL, not bound parameters: PostgreSQL must see the same expression in the
    # SELECT and the GROUP BY, and two binds of 0 are two different parameters to it.
    clustered = case(
        (KEYWORDS.c.cluster_id.is_(None), literal_column("0")), else_=literal_column("1")
    )
    rows = conn.execute(
        select(KEYWORDS.c.status, clustered, func.count())
        .where(*scope.rows_of(KEYWORDS))
        .group_by(KEYWORDS.c.status, clustered)
    ).all()
    linked = sum(int(n) for _, is_linked, n in rows if is_linked)
    counts = _totals((status, n) for status, _, n in rows)
    return KeywordCounts(**counts, clustered=linked, unclustered=counts["total"] - linked)


def content_counts(conn: Connection, scope: Scope) -> ContentCounts:
    rows = conn.execute(
        select(CONTENT.c.status, CONTENT.c.site_status, func.count())
        .where(*scope.rows_of(CONTENT))
        .group_by(CONTENT.c.status, CONTENT.c.site_status)
    ).all()
    by_status = _totals(((status, n) for status, _, n in rows), CONTENT_STATUSES)
    by_site = _totals(((site_status, n) for _, site_status, n in rows), SITE_STATUSES)
    return ContentCounts(**by_status, by_site_status=by_site["by_status"])


def image_counts(conn: Connection, scope: Scope) -> ImageCounts:
    stmt = select(IMAGES.c.status, func.count()).group_by(IMAGES.c.status)
    if scope.sector_id is not None:  # images carry no sector: their task's
        stmt = stmt.join(TASKS, TASKS.c.id == IMAGES.c.task_id)
    stmt = stmt.where(*scope.rows_of(IMAGES, sector_of=TASKS.c.sector_id))
    counts = _totals((row[0], row[1]) for row in conn.execute(stmt).all())
    by_status = counts["by_status"]
    return ImageCounts(
        **counts,
        generated=by_status.get("generated", 0),
        failed=by_status.get("failed", 0),
        pending=by_status.get("pending", 0),
    )


def credit_counts(conn: Connection, scope: Scope) -> CreditCounts:
    """Credits by operation, attributed to the site as the module docstring says: one
    query, a LEFT JOIN per kind of paid-for object."""
    joined = USAGE
    site_of: list[Any] = []
    sector_of: list[Any] = []
    for kind, table in PAID_FOR.items():
        alias = table.alias(f"paid_{kind}")
        on = and_(USAGE.c.related_object_type == kind, alias.c.id == USAGE.c.related_object_id)
        joined = joined.outerjoin(alias, on)
        site_of.append(alias.c.site_id)
        if kind == "image":
            image_task = TASKS.alias("paid_image_task")
            joined = joined.outerjoin(image_task, image_task.c.id == alias.c.task_id)
            sector_of.append(image_task.c.sector_id)
        else:
            sector_of.append(alias.c.sector_id)
    no_row = USAGE.c.related_object_type.not_in(list(PAID_FOR))
    joined = joined.outerjoin(
        TASK_LOGS, and_(no_row, TASK_LOGS.c.id == USAGE.c.ai_task_log_id)
    ).outerjoin(RUNS, RUNS.c.run_id == TASK_LOGS.c.workflow_id)
    site_of.append(RUNS.c.site_id)
    conditions = [
        USAGE.c.account_id == scope.account_id,
        func.coalesce(*site_of) == scope.site_id,
        *scope.window(USAGE.c.created_at),
    ]
    if scope.sector_id is not None:
        conditions.append(func.coalesce(*sector_of) == scope.sector_id)
    rows = conn.execute(
        select(USAGE.c.operation_type, func.sum(USAGE.c.credits_used))
        .select_from(joined)
        .where(*conditions)
        .group_by(USAGE.c.operation_type)
        .order_by(USAGE.c.operation_type)
    ).all()
    by_operation = {str(op): int(total or 0) for op, total in rows}
    return CreditCounts(used=sum(by_operation.values()), by_operation=by_operation)


def _totals(pairs: Iterable[tuple[Any, Any]], known: Iterable[str] = ()) -> dict[str, Any]:
    """{"total", "by_status"} from (status, count) pairs, adding up repeated statuses;
    every `known` status is listed, with 0 when it has no rows."""
    by_status = dict.fromkeys(known, 0)
    for status, count in pairs:
        by_status[str(status)] = by_status.get(str(status), 0) + int(count)
    return {"total": sum(by_status.values()), "by_status": by_status}


__all__ = [
    "ContentCounts",
    "CreditCounts",
    "ImageCounts",
    "KeywordCounts",
    "Scope",
    "StageCounts",
    "WorkflowStats",
    "sector_of_site",
    "workflow_stats",
]
