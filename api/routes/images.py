"""Image batches: start (quoted against available credits), watch, pause, resume, cancel."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, Field
from sqlalchemy import delete, insert, select
from temporalio.client import WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import CurrentAccountId, EngineDep, SettingsDep, TemporalClientDep
from api.errors import error_responses, unprocessable
from domain.images import quote_batch
from domain.ledger import InsufficientCredits, Ledger
from models.db import utcnow
from models.runs import ImageBatch
from workflows.client import batch_account, new_batch_id, start_image_batch
from workflows.image_batch import BatchProgress, ControlInput, ImageBatchWorkflow

router = APIRouter(prefix="/images", tags=["images"], responses=error_responses(401))
BATCHES = ImageBatch.__table__

BatchIdPath = Annotated[str, Path(max_length=100, description="The batch id from POST")]
# A batch's plan and state travel as Temporal payloads (2 MB limit): ~200 bytes an image.
MAX_BATCH_IMAGES = 5000


class BatchCreate(BaseModel):
    task_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        min_length=1, max_length=5000, description="Tasks whose content gets images"
    )
    model: str | None = Field(default=None, max_length=100, description="Image model name")
    max_in_article_images: int | None = Field(default=None, ge=0, le=10)


class BatchStarted(BaseModel):
    batch_id: str
    status: str
    images: int
    credits_quoted: int


class ControlAccepted(BaseModel):
    batch_id: str
    requested: str


@router.post(
    "/batches",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchStarted,
    responses=error_responses(402, 503),
)
async def create_batch(
    body: BatchCreate,
    account_id: CurrentAccountId,
    engine: EngineDep,
    settings: SettingsDep,
    client: TemporalClientDep,
) -> BatchStarted:
    """Quote the batch; 402 if it exceeds available credits, 422 for unknown tasks or
    tasks without content; otherwise start the workflow and answer 202 at once."""
    task_ids = list(dict.fromkeys(body.task_ids))
    with engine.connect() as conn:
        quote = quote_batch(conn, account_id, task_ids, body.model, body.max_in_article_images)
    if quote.missing_task_ids:
        raise unprocessable(f"Unknown task ids: {quote.missing_task_ids}", ("body", "task_ids"))
    if quote.tasks_without_content:
        raise unprocessable(
            f"Tasks without content (generate content first): {quote.tasks_without_content}",
            ("body", "task_ids"),
        )
    if quote.images > MAX_BATCH_IMAGES:
        raise unprocessable(
            f"A batch makes at most {MAX_BATCH_IMAGES} images; this one would make "
            f"{quote.images}. Split the tasks into several batches.",
            ("body", "task_ids"),
        )
    available = Ledger(engine).balance(account_id).available
    if quote.credits > available:
        raise InsufficientCredits(quote.credits, available)
    batch_id = new_batch_id(account_id)
    with engine.begin() as conn:
        conn.execute(
            insert(BATCHES).values(
                batch_id=batch_id,
                account_id=account_id,
                site_id=quote.site_id,
                model_name=quote.pricing.model_name,
                status="running",
                images_total=quote.images,
                task_ids=task_ids,
                cost_usd=Decimal("0"),
                created_at=utcnow(),
            )
        )
    try:
        await start_image_batch(
            client,
            settings.task_queue,
            account_id=account_id,
            task_ids=task_ids,
            model=body.model,
            max_in_article_images=body.max_in_article_images,
            site_id=quote.site_id,
            batch_id=batch_id,
        )
    except BaseException:
        with engine.begin() as conn:  # nothing half-written: no batch row without a workflow
            conn.execute(delete(BATCHES).where(BATCHES.c.batch_id == batch_id))
        raise
    return BatchStarted(
        batch_id=batch_id, status="running", images=quote.images, credits_quoted=quote.credits
    )


def _owned_handle(
    client: TemporalClientDep, batch_id: str, account_id: int
) -> WorkflowHandle[ImageBatchWorkflow, BatchProgress]:
    """Another account's (or a malformed) batch id answers 404, never 403."""
    if batch_account(batch_id) != account_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Image batch {batch_id} not found")
    return client.get_workflow_handle_for(ImageBatchWorkflow.run, batch_id)


@router.get("/batches/{batch_id}", response_model=BatchProgress, responses=error_responses(404))
async def get_batch(
    batch_id: BatchIdPath,
    account_id: CurrentAccountId,
    client: TemporalClientDep,
    engine: EngineDep,
) -> BatchProgress:
    """Live progress from the workflow's `progress` query; the stored summary once it is
    finished and no worker can answer the query."""
    handle = _owned_handle(client, batch_id, account_id)
    try:
        return await handle.query(ImageBatchWorkflow.progress)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(404, f"Image batch {batch_id} not found") from err
        stored = _stored_progress(engine, batch_id, account_id)
        if stored is None:
            raise
        return stored
    except WorkflowQueryFailedError as err:
        stored = _stored_progress(engine, batch_id, account_id)
        if stored is None:
            raise HTTPException(503, f"Image batch {batch_id} cannot answer right now") from err
        return stored


def _stored_progress(engine: EngineDep, batch_id: str, account_id: int) -> BatchProgress | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(BATCHES).where(
                BATCHES.c.batch_id == batch_id, BATCHES.c.account_id == account_id
            )
        ).first()
    if row is None or row.finished_at is None:
        return None
    return BatchProgress(
        batch_id=batch_id,
        status=row.status,
        pause_reason=None,
        images_total=row.images_total,
        images_done=row.images_done,
        images_failed=row.images_failed,
        images_in_flight=0,
        credits_reserved=0,
        credits_used=row.credits_used,
        cost_usd=row.cost_usd,
        balance=None,
        errors=[],
    )


async def _control(
    client: TemporalClientDep, batch_id: str, account_id: int, name: str
) -> ControlAccepted:
    handle = _owned_handle(client, batch_id, account_id)
    signal = {
        "pause": ImageBatchWorkflow.pause,
        "resume": ImageBatchWorkflow.resume,
        "cancel": ImageBatchWorkflow.cancel,
    }[name]
    try:
        await handle.signal(signal, ControlInput(reason="user"))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            desc = await _describe_or_404(handle, batch_id)
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"Image batch {batch_id} has already finished ({desc})"
            ) from err
        raise
    return ControlAccepted(batch_id=batch_id, requested=name)


async def _describe_or_404(handle: WorkflowHandle, batch_id: str) -> str:
    try:
        desc = await handle.describe()
    except RPCError as err:
        raise HTTPException(404, f"Image batch {batch_id} not found") from err
    return desc.status.name.lower() if desc.status else "closed"


CONTROL_RESPONSES = error_responses(404, 409)


@router.post("/batches/{batch_id}/pause", status_code=202, responses=CONTROL_RESPONSES)
async def pause_batch(
    batch_id: BatchIdPath, account_id: CurrentAccountId, client: TemporalClientDep
) -> ControlAccepted:
    """Claim no new image; images in flight finish and are charged."""
    return await _control(client, batch_id, account_id, "pause")


@router.post("/batches/{batch_id}/resume", status_code=202, responses=CONTROL_RESPONSES)
async def resume_batch(
    batch_id: BatchIdPath, account_id: CurrentAccountId, client: TemporalClientDep
) -> ControlAccepted:
    return await _control(client, batch_id, account_id, "resume")


@router.post("/batches/{batch_id}/cancel", status_code=202, responses=CONTROL_RESPONSES)
async def cancel_batch(
    batch_id: BatchIdPath, account_id: CurrentAccountId, client: TemporalClientDep
) -> ControlAccepted:
    """Stop claiming, let in-flight images finish, release the hold, log and notify."""
    return await _control(client, batch_id, account_id, "cancel")
