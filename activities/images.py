"""Image activities: plan a batch, generate and store one image, mark failures, finish.

Generation is idempotent per image row: an image already stored is returned as it is,
never generated or stored a second time, so a retry after a crash costs nothing extra.
A call waits for one of its model's provider-wide slots (activities.provider_gate) and
stores the bytes in the media store (a folder, or S3-compatible storage), under a key
every host resolves the same way.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import timedelta
from decimal import Decimal
from html import unescape
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, insert, select, update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.common import Frozen, heartbeating, non_retryable
from activities.provider_gate import ProviderGate, SlotDeferred, SlotWaitTimeout
from core import metrics
from domain.images import in_article_count, resolve_image_model
from domain.pricing import ModelUnavailable, billed_usd, image_cost_usd, load_billing_defaults
from models.db import utcnow
from models.logs import AITaskLog
from models.pipeline import Content, Image, Task
from models.runs import ImageBatch
from models.sites import Site
from providers.base import ProviderError
from providers.media_store import MediaStore, image_key
from providers.registry import ProviderRegistry

T = TypeVar("T")
IMAGES = Image.__table__
TASKS = Task.__table__
CONTENT = Content.__table__
SITES = Site.__table__
BATCHES = ImageBatch.__table__
TASK_LOGS = AITaskLog.__table__
H2 = re.compile(r"<h2[^>]*>(.*?)</h2>", re.IGNORECASE | re.DOTALL)
TAGS = re.compile(r"<[^>]+>")


class PlanInput(Frozen):
    batch_id: str
    account_id: int
    task_ids: list[int]
    task_log_id: int | None = None
    model: str | None = None
    max_in_article_images: int | None = None


class ImageSlot(Frozen):
    image_id: int
    task_id: int
    image_type: str
    prompt: str


class PlanOutput(Frozen):
    model_name: str
    provider: str
    max_concurrency: int
    credits_per_image: int
    cost_per_image: Decimal
    billed_usd_per_image: Decimal
    credit_price_usd: Decimal = Decimal("0.01")
    slots: list[ImageSlot]
    already_done: int
    missing_task_ids: list[int]
    tasks_without_content: list[int]


class GenerateImageInput(Frozen):
    batch_id: str
    account_id: int
    image_id: int
    model_name: str
    provider: str
    prompt: str
    cost_per_image: Decimal
    credits_per_image: int
    size: str = "1024x1024"
    max_concurrency: int = 1  # the model's provider-wide limit (activities.provider_gate)
    slot_wait_s: float = 120.0  # then the image goes back to its batch as "deferred"
    recheck: bool = False  # an earlier activity (a failed lane) may have stored it: look first


class GenerateImageOutput(Frozen):
    image_id: int
    # generated | failed | deferred (stopped or no slot before the provider) | retry (in a
    # lane: the provider refused it for now; the workflow retries it alone)
    status: str
    cost_usd: Decimal = Decimal("0")
    file_path: str | None = None
    error: str | None = None
    reused: bool = False
    provider_s: float = 0.0  # how long the provider took (the workflow sizes its queue by it)


class GenerateImagesInput(Frozen):
    images: list[GenerateImageInput]


class GenerateImagesOutput(Frozen):
    images: list[GenerateImageOutput]  # in the order asked


class MarkFailedInput(Frozen):
    image_id: int
    error: str
    withdraw: bool = False  # also fail an image that was stored but cannot be charged


class MarkFailedOutput(Frozen):
    """`stored` is True when the image turned out to be stored (and was left as is)."""

    stored: bool
    cost_usd: Decimal = Decimal("0")


class FinishBatchInput(Frozen):
    batch_id: str
    status: str
    images_total: int
    images_done: int
    images_failed: int
    credits_used: int
    cost_usd: Decimal
    errors: list[str] = []


def _text(html: str) -> str:
    return " ".join(unescape(TAGS.sub(" ", html)).split())


def derive_prompts(
    title: str, html: str, in_article: int, written: list[dict[str, str]] | None = None
) -> list[tuple[str, str]]:
    """(prompt, alt text) for the featured image and each in-article one: the prompts
    `generate_image_prompts` wrote for the content when it has them, else one derived
    from the title and each h2 section (repeating when sections run out)."""
    written = written or []
    headings = [_text(h) for h in H2.findall(html or "")] or [title]
    derived = [(f'Featured editorial image for the article "{title}", clean, photographic', title)]
    for i in range(in_article):
        heading = headings[i % len(headings)]
        derived.append(
            (f'Illustration for the section "{heading}" of the article "{title}"', heading)
        )
    return [
        (written[i]["prompt"], written[i].get("alt_text", alt)) if i < len(written) else (p, alt)
        for i, (p, alt) in enumerate(derived)
    ]


class ImageActivities:
    """Image work with its dependencies injected: database, providers, the provider-wide
    slots and the media store."""

    def __init__(
        self,
        engine: Engine,
        providers: ProviderRegistry,
        store: MediaStore,
        gate: ProviderGate,
        executor: Executor | None = None,
    ) -> None:
        self.engine = engine
        self.providers = providers
        self.store = store
        self.gate = gate
        # Blocking work (file + DB) of the async generate activity runs here: the worker's
        # pool, not asyncio's small default one (6 threads on 2 cores) that a wave outgrows.
        self.executor = executor

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # ---- plan ----------------------------------------------------------------------
    @activity.defn(name="plan_image_batch")
    def plan_image_batch(self, inp: PlanInput) -> PlanOutput:
        """Resolve the model, create one image row per slot (once: unique per task/slot),
        and return the slots still to generate."""
        try:
            with self.engine.begin() as conn:
                return self._plan(conn, inp)
        except ModelUnavailable as exc:
            raise non_retryable(exc) from exc

    def _plan(self, conn: Connection, inp: PlanInput) -> PlanOutput:
        tasks = conn.execute(
            select(TASKS.c.id, TASKS.c.site_id, TASKS.c.title).where(
                TASKS.c.id.in_(inp.task_ids), TASKS.c.account_id == inp.account_id
            )
        ).all()
        found = {t.id for t in tasks}
        contents = {
            c.task_id: c
            for c in conn.execute(
                select(
                    CONTENT.c.id,
                    CONTENT.c.task_id,
                    CONTENT.c.title,
                    CONTENT.c.html,
                    CONTENT.c.image_prompts,
                ).where(CONTENT.c.task_id.in_(found))
            )
        }
        site = self._site(conn, tasks[0].site_id) if tasks else None
        defaults = load_billing_defaults(conn)
        pricing = resolve_image_model(conn, inp.model, site)
        in_article = in_article_count(inp.max_in_article_images, site)
        wanted = {
            (task.id, position): (task, contents[task.id].id, prompt, alt)
            for task in tasks
            if task.id in contents
            for position, (prompt, alt) in enumerate(
                derive_prompts(
                    contents[task.id].title,
                    contents[task.id].html,
                    in_article,
                    contents[task.id].image_prompts,
                )
            )
        }
        rows = self._claim_slots(conn, inp, wanted)
        slots = [
            ImageSlot(image_id=r.id, task_id=r.task_id, image_type=r.image_type, prompt=r.prompt)
            for r in rows
            if r.status != "generated"
        ]
        already_done = len(rows) - len(slots)
        self._upsert_batch(conn, inp, pricing.model_name, len(slots))
        if inp.task_log_id is not None:
            conn.execute(
                update(TASK_LOGS)
                .where(TASK_LOGS.c.id == inp.task_log_id, TASK_LOGS.c.phase == "INIT")
                .values(phase="PREP", model_name=pricing.model_name, updated_at=utcnow())
            )
        return PlanOutput(
            model_name=pricing.model_name,
            provider=pricing.provider,
            max_concurrency=pricing.max_concurrency,
            credits_per_image=pricing.credits_per_image,
            cost_per_image=pricing.cost_per_image,
            billed_usd_per_image=billed_usd(pricing.credits_per_image, defaults.credit_price_usd),
            credit_price_usd=defaults.credit_price_usd,
            slots=slots,
            already_done=already_done,
            missing_task_ids=sorted(set(inp.task_ids) - found),
            tasks_without_content=sorted(found - set(contents)),
        )

    def _site(self, conn: Connection, site_id: int) -> Any:
        return conn.execute(select(SITES).where(SITES.c.id == site_id)).first()

    def _claim_slots(
        self, conn: Connection, inp: PlanInput, wanted: dict[tuple[int, int], Any]
    ) -> list[Any]:
        """Create the missing image rows and re-arm the unfinished ones for this batch, as
        set operations (a 2,000-image plan is a handful of statements, not thousands).
        Rows are unique per (task, type, position), so a replayed plan changes nothing."""
        task_ids = sorted({task_id for task_id, _ in wanted})
        # On PostgreSQL, lock the slots: a concurrent plan waits, then sees this claim.
        # (SQLite already serializes writers with BEGIN IMMEDIATE.)
        existing = self._slot_rows(conn, task_ids, wanted, lock=True)
        now = utcnow()
        missing = [
            {
                "account_id": inp.account_id,
                "site_id": task.site_id,
                "task_id": task.id,
                "content_id": content_id,
                "image_type": "featured" if position == 0 else "in_article",
                "position": position,
                "prompt": prompt,
                "alt_text": alt[:500],
                "status": "pending",
                "batch_id": inp.batch_id,
                "cost_usd": Decimal("0"),
                "credits_used": 0,
                "created_at": now,
                "updated_at": now,
            }
            for (task_id, position), (task, content_id, prompt, alt) in wanted.items()
            if (task_id, position) not in existing
        ]
        if missing:
            conn.execute(insert(IMAGES), missing)
        busy = self._owned_elsewhere(conn, inp.batch_id, existing.values())
        rearm = [r.id for r in existing.values() if r.status != "generated" and r.id not in busy]
        if rearm:
            conn.execute(
                update(IMAGES)
                .where(IMAGES.c.id.in_(rearm))
                .values(status="pending", batch_id=inp.batch_id, error=None, updated_at=now)
            )
        rows = self._slot_rows(conn, task_ids, wanted)
        return [rows[key] for key in sorted(rows) if rows[key].id not in busy]

    def _owned_elsewhere(self, conn: Connection, batch_id: str, rows: Any) -> set[int]:
        """Image ids another running batch has claimed: never generated (or charged) twice."""
        others = {
            r.batch_id: r
            for r in rows
            if r.status == "pending" and r.batch_id not in (None, batch_id)
        }
        if not others:
            return set()
        running = set(
            conn.execute(
                select(BATCHES.c.batch_id).where(
                    BATCHES.c.batch_id.in_(list(others)), BATCHES.c.status == "running"
                )
            ).scalars()
        )
        return {r.id for r in rows if r.status == "pending" and r.batch_id in running}

    def _slot_rows(
        self,
        conn: Connection,
        task_ids: list[int],
        wanted: dict[tuple[int, int], Any],
        lock: bool = False,
    ) -> dict[tuple[int, int], Any]:
        if not task_ids:
            return {}
        stmt = (
            select(
                IMAGES.c.id,
                IMAGES.c.task_id,
                IMAGES.c.position,
                IMAGES.c.image_type,
                IMAGES.c.prompt,
                IMAGES.c.status,
                IMAGES.c.batch_id,
            )
            .where(IMAGES.c.task_id.in_(task_ids))
            .order_by(IMAGES.c.id)
        )
        if lock and conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        found = conn.execute(stmt).all()
        return {(r.task_id, r.position): r for r in found if (r.task_id, r.position) in wanted}

    def _upsert_batch(self, conn: Connection, inp: PlanInput, model_name: str, total: int) -> None:
        values = {"model_name": model_name, "images_total": total, "status": "running"}
        updated = conn.execute(
            update(BATCHES).where(BATCHES.c.batch_id == inp.batch_id).values(**values)
        ).rowcount
        if not updated:
            conn.execute(
                insert(BATCHES).values(
                    batch_id=inp.batch_id,
                    account_id=inp.account_id,
                    task_ids=list(inp.task_ids),
                    created_at=utcnow(),
                    cost_usd=Decimal("0"),
                    **values,
                )
            )

    # ---- generate ----------------------------------------------------------------------
    @activity.defn(name="generate_image")
    async def generate_image(self, inp: GenerateImageInput) -> GenerateImageOutput:
        """Generate, download and store one image; a stored image is never made twice."""
        async with heartbeating():
            return await self._generate(inp, activity.info().attempt > 1 or inp.recheck)

    @activity.defn(name="generate_images")
    async def generate_images(self, inp: GenerateImagesInput) -> GenerateImagesOutput:
        """A lane: several images of one batch in one activity, each made exactly as
        `generate_image` makes it (its own provider slot, store and row). An image the
        provider refused for now comes back as `retry` (its back-off already applied) for
        the workflow to retry alone, under the full retry policy; anything else that went
        wrong fails the lane once every image has settled, and a retry reuses the images
        stored meanwhile."""
        retry = activity.info().attempt > 1
        async with heartbeating():
            settled = await asyncio.gather(
                *(self._generate(one, retry or one.recheck) for one in inp.images),
                return_exceptions=True,
            )
        images: list[GenerateImageOutput] = []
        for one, out in zip(inp.images, settled, strict=True):
            if isinstance(out, ApplicationError) and isinstance(out.__cause__, ProviderError):
                images.append(
                    GenerateImageOutput(image_id=one.image_id, status="retry", error=out.message)
                )
            elif isinstance(out, BaseException):
                raise out
            else:
                images.append(out)
        return GenerateImagesOutput(images=images)

    async def _generate(self, inp: GenerateImageInput, retry: bool) -> GenerateImageOutput:
        """One image: `retry` (a retried attempt, or an image an earlier activity may have
        stored) first looks for it stored."""
        if retry and (stored := await self._blocking(self._stored, inp.image_id)):
            return stored
        try:
            called = await self._call_provider(inp, retry)
            if isinstance(called, GenerateImageOutput):
                return called
            data, mime, provider_cost, provider_s = called
            cost = image_cost_usd(inp.cost_per_image, 1, provider_cost)
            key = await self._blocking(self._store, inp, data, mime, cost, retry)
            activity.logger.debug(
                "image %d stored as %s (%d bytes, %.2f s at the provider)",
                inp.image_id,
                key,
                len(data),
                provider_s,
            )
        except ProviderError as exc:
            if not exc.retryable:
                await self._blocking(self._mark_failed, inp.image_id, exc.message)
                return GenerateImageOutput(
                    image_id=inp.image_id, status="failed", error=exc.message
                )
            if exc.retry_after:  # the provider asked every caller of this model to wait
                await self.gate.back_off(inp.model_name, exc.retry_after)
            delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
            raise ApplicationError(exc.message, type=exc.code, next_retry_delay=delay) from exc
        return GenerateImageOutput(
            image_id=inp.image_id,
            status="generated",
            cost_usd=cost,
            file_path=key,
            provider_s=round(provider_s, 3),
        )

    async def _call_provider(
        self, inp: GenerateImageInput, retry: bool
    ) -> tuple[bytes, str, Decimal | None, float] | GenerateImageOutput:
        """The provider call and its duration, inside one of the model's provider-wide
        slots (held only while the provider works). A retry looks again once it has the
        slot: the attempt it replaced may still have been running, and stored the image."""
        try:
            async with self.gate.slot(
                inp.model_name,
                inp.max_concurrency,
                workflow_id=inp.batch_id,
                max_wait_s=inp.slot_wait_s,
            ):
                if retry and (stored := await self._blocking(self._stored, inp.image_id)):
                    return stored
                started = time.monotonic()
                try:
                    result = await self.providers.image(inp.provider).generate_image(
                        model=inp.model_name, prompt=inp.prompt, size=inp.size
                    )
                except Exception as exc:
                    elapsed = time.monotonic() - started
                    metrics.count_provider_call(inp.provider, inp.model_name, elapsed, exc)
                    raise
                elapsed = time.monotonic() - started
                metrics.count_provider_call(inp.provider, inp.model_name, elapsed)
        except (SlotDeferred, SlotWaitTimeout):
            return GenerateImageOutput(image_id=inp.image_id, status="deferred")
        return result.data, result.mime_type, result.provider_cost_usd, elapsed

    def _stored(self, image_id: int) -> GenerateImageOutput | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(IMAGES.c.status, IMAGES.c.cost_usd, IMAGES.c.file_path).where(
                    IMAGES.c.id == image_id
                )
            ).first()
        if row is None:
            raise ApplicationError(f"Image {image_id} does not exist", non_retryable=True)
        if row.status == "generated" and row.file_path and self.store.exists(row.file_path):
            return GenerateImageOutput(
                image_id=image_id,
                status="generated",
                cost_usd=Decimal(row.cost_usd),
                file_path=row.file_path,
                reused=True,
            )
        return None

    def _store(
        self, inp: GenerateImageInput, data: bytes, mime: str, cost: Decimal, retry: bool
    ) -> str:
        key = image_key(inp.account_id, inp.image_id, mime)
        if retry:  # a killed attempt may have left a partial file (a scan: only on retries)
            self.store.discard_partial(key)
        self.store.put(key, data, mime)  # atomic: a crash leaves no half-written image
        with self.engine.begin() as conn:
            before = conn.execute(
                select(IMAGES.c.status).where(IMAGES.c.id == inp.image_id)
            ).scalar_one_or_none()
            conn.execute(
                update(IMAGES)
                .where(IMAGES.c.id == inp.image_id)
                .values(
                    status="generated",
                    file_path=key,
                    mime_type=mime,
                    size_bytes=len(data),
                    model_name=inp.model_name,
                    cost_usd=cost,
                    credits_used=inp.credits_per_image,
                    error=None,
                    updated_at=utcnow(),
                )
            )
        if before != "generated":  # committed, and not a retry re-storing a stored image
            metrics.IMAGES.labels(inp.model_name, "generated").inc()
        return key

    # ---- failures and the end ------------------------------------------------------------
    @activity.defn(name="mark_image_failed")
    def mark_image_failed(self, inp: MarkFailedInput) -> MarkFailedOutput:
        """Fail an image that will not be charged. A stored image is only failed when
        `withdraw` is set (its file is removed: it is not delivered free); otherwise the
        caller learns it is stored and charges it."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(IMAGES.c.status, IMAGES.c.file_path, IMAGES.c.cost_usd).where(
                    IMAGES.c.id == inp.image_id
                )
            ).first()
            if row is not None and row.status == "generated" and not inp.withdraw:
                return MarkFailedOutput(stored=True, cost_usd=Decimal(row.cost_usd))
            failed = self._fail_row(conn, inp.image_id, inp.error)
        self._count_failed(failed)
        if row is not None and row.file_path and inp.withdraw:
            self.store.delete(row.file_path)
        return MarkFailedOutput(stored=False)

    def _mark_failed(self, image_id: int, error: str) -> None:
        with self.engine.begin() as conn:
            failed = self._fail_row(conn, image_id, error, only_unfinished=True)
        self._count_failed(failed)

    @staticmethod
    def _count_failed(model_name: str | None) -> None:
        if model_name is not None:
            metrics.IMAGES.labels(model_name or "unknown", "failed").inc()

    def _fail_row(
        self, conn: Connection, image_id: int, error: str, only_unfinished: bool = False
    ) -> str | None:
        """Fail the row; returns its model name ("" when unset) if it was not failed
        before (a fact to count once committed), else None."""
        where = [IMAGES.c.id == image_id]
        if only_unfinished:
            where.append(IMAGES.c.status != "generated")
        before = conn.execute(
            select(IMAGES.c.status, IMAGES.c.model_name, IMAGES.c.batch_id).where(*where)
        ).first()
        conn.execute(
            update(IMAGES)
            .where(*where)
            .values(
                status="failed",
                error=error[:2000],
                credits_used=0,
                file_path=None,
                updated_at=utcnow(),
            )
        )
        if before is None or before.status == "failed":
            return None
        model = before.model_name
        if not model and before.batch_id:  # never stored: the batch's model
            model = conn.execute(
                select(BATCHES.c.model_name).where(BATCHES.c.batch_id == before.batch_id)
            ).scalar_one_or_none()
        return model or ""

    @activity.defn(name="finish_image_batch")
    def finish_image_batch(self, inp: FinishBatchInput) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(BATCHES)
                .where(BATCHES.c.batch_id == inp.batch_id)
                .values(
                    status=inp.status,
                    images_total=inp.images_total,
                    images_done=inp.images_done,
                    images_failed=inp.images_failed,
                    credits_used=inp.credits_used,
                    cost_usd=inp.cost_usd,
                    errors=list(inp.errors),
                    finished_at=utcnow(),
                )
            )
