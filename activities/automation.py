"""Activities of an automation run that are not AI calls: plan the run from the site's
backlog, turn ideas into writer tasks, move finished articles to review (or approve and
schedule them), and keep the run's row in step with the workflow."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, insert, select, update
from temporalio import activity

from activities.common import Frozen, non_retryable
from activities.text import TextModel, resolve_text_model
from domain import publishing
from domain.ai_functions import (
    AUTO_CLUSTER,
    GENERATE_CONTENT,
    GENERATE_IDEAS,
    GENERATE_IMAGE_PROMPTS,
)
from domain.automation import active_run, backlog, chunks, claim_site, run_settings
from domain.images import in_article_count, resolve_image_model
from domain.pricing import ModelUnavailable, estimate_text_credits, load_billing_defaults
from models.db import utcnow
from models.pipeline import Content, ContentIdea, Task
from models.runs import AutomationRun
from models.sites import Site

RUNS = AutomationRun.__table__
SITES = Site.__table__
IDEAS = ContentIdea.__table__
TASKS = Task.__table__
CONTENT = Content.__table__

# Per-call estimates the holds are sized by (prompt characters, output tokens): a charge
# beyond them comes from available credits, so they only need to be reasonable.
ESTIMATES = {
    AUTO_CLUSTER.name: (2500, 1500),
    GENERATE_IDEAS.name: (2500, 1200),
    GENERATE_CONTENT.name: (3500, 3000),
    GENERATE_IMAGE_PROMPTS.name: (2500, 1200),
}


class RunPlanInput(Frozen):
    run_id: str
    account_id: int
    site_id: int


class RunPlan(Frozen):
    text_model: TextModel
    image_model: str
    image_credits_per_image: int
    image_max_concurrency: int = 1  # the image model's provider-wide limit
    images_per_article: int
    max_in_article_images: int
    credit_price_usd: Decimal
    estimates: dict[str, int]  # credits per item of each text function
    keywords_per_cluster_call: int
    batch_sizes: dict[str, int]  # items in work at once per stage
    image_batch_size: int  # articles per child image batch
    keyword_batches: list[list[int]]
    clusters: list[int]
    ideas: list[int]
    tasks: list[int]
    prompts: list[list[int]]  # [content id, task id]
    images: list[list[int]]  # [content id, task id]
    review: list[int]


class CreateTasksInput(Frozen):
    account_id: int
    site_id: int
    idea_ids: list[int]


class CreateTasksOutput(Frozen):
    task_ids: list[int]  # one per idea that had (or now has) a task, in the ideas' order


class FinalizeInput(Frozen):
    account_id: int
    site_id: int
    content_ids: list[int]


class FinalizeOutput(Frozen):
    review: int
    approved: int
    scheduled: list[datetime]


class ClaimRunInput(Frozen):
    run_id: str
    account_id: int
    site_id: int
    budget_credits: int | None = None


class ClaimRunOutput(Frozen):
    claimed: bool
    reason: str = ""


class RecordRunInput(Frozen):
    run_id: str
    status: str
    pause_reason: str | None = None
    current_stage: str | None = None
    credits_used: int = 0
    cost_usd: Decimal = Decimal("0")
    summary: dict[str, Any] = {}
    finished: bool = False


class AutomationActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn(name="plan_automation_run")
    def plan_automation_run(self, inp: RunPlanInput) -> RunPlan:
        """The models, the site's config and every stage's backlog, once per run."""
        try:
            with self.engine.connect() as conn:
                return self._plan(conn, inp)
        except ModelUnavailable as exc:
            raise non_retryable(exc) from exc

    def _plan(self, conn: Any, inp: RunPlanInput) -> RunPlan:
        site = conn.execute(
            select(SITES).where(SITES.c.id == inp.site_id, SITES.c.account_id == inp.account_id)
        ).first()
        if site is None:
            raise non_retryable(ValueError(f"Site {inp.site_id} does not exist"))
        cfg = run_settings(conn, inp.site_id)
        text = resolve_text_model(conn, cfg.text_model, inp.site_id)
        image = resolve_image_model(conn, cfg.image_model, site)
        in_article = in_article_count(cfg.max_in_article_images, site)
        work = backlog(conn, inp.site_id, 1 + in_article, cfg.max_keywords_per_run)
        pricing = text.pricing()
        return RunPlan(
            text_model=text,
            image_model=image.model_name,
            image_credits_per_image=image.credits_per_image,
            image_max_concurrency=image.max_concurrency,
            images_per_article=1 + in_article,
            max_in_article_images=in_article,
            credit_price_usd=load_billing_defaults(conn).credit_price_usd,
            estimates={
                name: estimate_text_credits(pricing, chars, tokens)
                for name, (chars, tokens) in ESTIMATES.items()
            },
            keywords_per_cluster_call=cfg.keywords_per_cluster_call,
            batch_sizes={
                AUTO_CLUSTER.name: max(1, text.max_concurrency),
                GENERATE_IDEAS.name: cfg.ideas_batch_size,
                GENERATE_CONTENT.name: cfg.content_batch_size,
                GENERATE_IMAGE_PROMPTS.name: cfg.image_prompts_batch_size,
            },
            image_batch_size=cfg.image_batch_size,
            keyword_batches=chunks(work.keywords, cfg.keywords_per_cluster_call),
            clusters=work.clusters,
            ideas=work.ideas,
            tasks=work.tasks,
            prompts=[[c, t] for c, t in work.prompts],
            images=[[c, t] for c, t in work.images],
            review=work.review,
        )

    @activity.defn(name="create_tasks")
    def create_tasks(self, inp: CreateTasksInput) -> CreateTasksOutput:
        """One writer task per idea, once (a task's idea is unique): a retry or a later
        run finds the task and makes no second one."""
        with self.engine.begin() as conn:
            ideas = conn.execute(
                select(IDEAS).where(
                    IDEAS.c.id.in_(inp.idea_ids), IDEAS.c.account_id == inp.account_id
                )
            ).all()
            existing = dict(
                conn.execute(
                    select(TASKS.c.idea_id, TASKS.c.id).where(TASKS.c.idea_id.in_(inp.idea_ids))
                ).all()
            )
            now = utcnow()
            for idea in ideas:
                if idea.id in existing:
                    continue
                existing[idea.id] = conn.execute(
                    insert(TASKS)
                    .values(
                        account_id=idea.account_id,
                        site_id=idea.site_id,
                        sector_id=idea.sector_id,
                        cluster_id=idea.cluster_id,
                        idea_id=idea.id,
                        title=idea.title,
                        keywords=list(idea.target_keywords or []),
                        status="queued",
                        created_at=now,
                    )
                    .returning(TASKS.c.id)
                ).scalar_one()
            conn.execute(
                update(IDEAS).where(IDEAS.c.id.in_(list(existing))).values(status="queued")
            )
        return CreateTasksOutput(task_ids=[existing[i] for i in inp.idea_ids if i in existing])

    @activity.defn(name="finalize_content")
    def finalize_content(self, inp: FinalizeInput) -> FinalizeOutput:
        """Finished drafts go to review, or to approved when the site auto-approves; approved
        content gets the next free publish slots when the site auto-schedules."""
        with self.engine.begin() as conn:
            site = conn.execute(select(SITES).where(SITES.c.id == inp.site_id)).first()
            drafts = list(
                conn.execute(
                    select(CONTENT.c.id)
                    .where(
                        CONTENT.c.id.in_(inp.content_ids),
                        CONTENT.c.account_id == inp.account_id,
                        CONTENT.c.status == "draft",
                    )
                    .order_by(CONTENT.c.id)
                ).scalars()
            )
            if not drafts or site is None:
                return FinalizeOutput(review=0, approved=0, scheduled=[])
            status = "approved" if site.auto_approve_content else "review"
            now = utcnow()
            conn.execute(
                update(CONTENT)
                .where(CONTENT.c.id.in_(drafts))
                .values(status=status, updated_at=now)
            )
            scheduled: list[datetime] = []
            if status == "approved" and site.auto_schedule:
                taken = publishing.taken_slots(conn, inp.site_id)
                scheduled = publishing.next_slots(site, taken, len(drafts), now)
                for content_id, slot in zip(drafts, scheduled, strict=True):
                    conn.execute(
                        update(CONTENT)
                        .where(CONTENT.c.id == content_id)
                        .values(site_status="scheduled", scheduled_publish_at=slot)
                    )
        approved = len(drafts) if status == "approved" else 0
        return FinalizeOutput(review=len(drafts) - approved, approved=approved, scheduled=scheduled)

    @activity.defn(name="claim_run")
    def claim_run(self, inp: ClaimRunInput) -> ClaimRunOutput:
        """A scheduled run's row, claiming the site; if another run of the site is active,
        a row saying this start was skipped (idempotent: a retry finds either row)."""
        with self.engine.begin() as conn:
            mine = conn.execute(
                select(RUNS.c.status).where(RUNS.c.run_id == inp.run_id)
            ).scalar_one_or_none()
            if mine is not None:
                return ClaimRunOutput(claimed=mine != "skipped", reason=f"already {mine}")
            if claim_site(conn, inp.run_id, inp.account_id, inp.site_id, inp.budget_credits):
                return ClaimRunOutput(claimed=True)
            busy = active_run(conn, inp.site_id)
            conn.execute(
                insert(RUNS).values(
                    run_id=inp.run_id,
                    account_id=inp.account_id,
                    site_id=inp.site_id,
                    status="skipped",
                    budget_credits=inp.budget_credits,
                    credits_used=0,
                    cost_usd=Decimal("0"),
                    summary={"skipped_because": busy},
                    started_at=utcnow(),
                    finished_at=utcnow(),
                )
            )
        return ClaimRunOutput(claimed=False, reason=f"run {busy} of this site is active")

    @activity.defn(name="record_run")
    def record_run(self, inp: RecordRunInput) -> None:
        """The run's row follows the workflow (the API lists runs from these rows)."""
        values: dict[str, Any] = {
            "status": inp.status,
            "pause_reason": inp.pause_reason,
            "current_stage": inp.current_stage,
            "credits_used": inp.credits_used,
            "cost_usd": inp.cost_usd,
            "summary": inp.summary,
        }
        if inp.finished:
            values.update(finished_at=utcnow(), active_site_id=None)
        with self.engine.begin() as conn:
            conn.execute(update(RUNS).where(RUNS.c.run_id == inp.run_id).values(**values))
