"""Builders for review, calendar and stats tests: content in any state, its images, sectors,
a site's pipeline rows and the usage logs that paid for them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from domain.ledger import Ledger, Usage
from models import AITaskLog, AutomationRun, Content, Image, Sector, Task
from models.pipeline import Cluster, ContentIdea, Keyword


def _saved(engine: Engine, row: Any) -> Any:
    with Session(engine, expire_on_commit=False) as session:
        session.add(row)
        session.commit()
        return row


def sector(engine: Engine, account_id: int, site_id: int, name: str) -> Sector:
    return _saved(engine, Sector(account_id=account_id, site_id=site_id, name=name))


def content(
    engine: Engine,
    account_id: int,
    site_id: int,
    title: str = "An article",
    **fields: Any,
) -> Content:
    """A task and its content; `fields` set any Content column (status, site_status,
    scheduled_publish_at, published_at, sector_id, created_at, ...)."""
    sector_id = fields.get("sector_id")
    created = {"created_at": fields["created_at"]} if "created_at" in fields else {}
    task = _saved(
        engine,
        Task(
            account_id=account_id,
            site_id=site_id,
            sector_id=sector_id,
            title=title,
            status="done",
            **created,
        ),
    )
    return _saved(
        engine,
        Content(
            account_id=account_id,
            site_id=site_id,
            task_id=task.id,
            title=title,
            html=f"<p>{title}</p>",
            **fields,
        ),
    )


def image(engine: Engine, row: Content, **fields: Any) -> Image:
    values: dict[str, Any] = {
        "account_id": row.account_id,
        "site_id": row.site_id,
        "task_id": row.task_id,
        "content_id": row.id,
        "prompt": "a picture",
        "status": "generated",
    }
    values.update(fields)
    return _saved(engine, Image(**values))


@dataclass
class Pipeline:
    """What `pipeline` made, to count and to charge for."""

    keywords: list[Keyword] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    ideas: list[ContentIdea] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    content: list[Content] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)


def pipeline(
    engine: Engine,
    account_id: int,
    site_id: int,
    sector_id: int | None,
    size: int,
    created_at: datetime | None = None,
) -> Pipeline:
    """`size` of everything in one sector, in a spread of statuses: 2×size keywords
    (half clustered), size clusters, ideas, tasks, content and 2×size images."""
    made = Pipeline()
    when = {"created_at": created_at} if created_at else {}
    common = {"account_id": account_id, "site_id": site_id, "sector_id": sector_id, **when}
    content_states = [
        ("draft", "not_published"),
        ("review", "not_published"),
        ("approved", "scheduled"),
        ("approved", "published"),
        ("approved", "failed"),
    ]
    for n in range(size):
        tag = f"{sector_id}-{n}-{secrets.token_hex(3)}"
        made.clusters.append(_saved(engine, Cluster(name=f"cluster {tag}", **common)))
        cluster_id = made.clusters[-1].id
        for linked in (True, False):
            made.keywords.append(
                _saved(
                    engine,
                    Keyword(
                        keyword=f"kw {tag} {linked}",
                        cluster_id=cluster_id if linked else None,
                        status="clustered" if linked else "new",
                        **common,
                    ),
                )
            )
        made.ideas.append(
            _saved(
                engine, ContentIdea(title=f"idea {tag}", status=("new", "queued")[n % 2], **common)
            )
        )
        made.tasks.append(
            _saved(
                engine,
                Task(title=f"task {tag}", idea_id=made.ideas[-1].id, status="done", **common),
            )
        )
        status, site_status = content_states[n % len(content_states)]
        made.content.append(
            _saved(
                engine,
                Content(
                    task_id=made.tasks[-1].id,
                    title=f"content {tag}",
                    status=status,
                    site_status=site_status,
                    **common,
                ),
            )
        )
        for position, image_status in enumerate(("generated", ("failed", "pending")[n % 2])):
            made.images.append(
                _saved(
                    engine,
                    Image(
                        account_id=account_id,
                        site_id=site_id,
                        task_id=made.tasks[-1].id,
                        content_id=made.content[-1].id,
                        image_type="featured" if position == 0 else "in_article",
                        position=position,
                        status=image_status,
                        **when,
                    ),
                )
            )
    return made


def automation_run(engine: Engine, account_id: int, site_id: int) -> AutomationRun:
    run_id = f"automation-run-{account_id}-{secrets.token_hex(4)}"
    return _saved(
        engine,
        AutomationRun(run_id=run_id, account_id=account_id, site_id=site_id, status="completed"),
    )


def task_log(engine: Engine, account_id: int, workflow_id: str, function_name: str) -> AITaskLog:
    return _saved(
        engine,
        AITaskLog(
            account_id=account_id,
            function_name=function_name,
            status="success",
            phase="DONE",
            idempotency_key=f"log-{secrets.token_hex(6)}",
            workflow_id=workflow_id,
        ),
    )


def charge(
    engine: Engine,
    account_id: int,
    credits: int,
    operation_type: str,
    related: tuple[str, int] | None = None,
    task_log_id: int | None = None,
) -> None:
    """One deduction with its usage log, paying for `related` (type, id)."""
    kind, object_id = related if related else (None, None)
    usage = Usage(
        operation_type=operation_type,
        related_object_type=kind,
        related_object_id=object_id,
        ai_task_log_id=task_log_id,
    )
    Ledger(engine).deduct(account_id, credits, f"test:{secrets.token_hex(6)}", usage)
