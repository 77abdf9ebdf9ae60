"""Image batches: start (quoted against available credits), watch, pause, resume, cancel;
and a generated image's file.

Routes that talk to Temporal are `async`; their database work runs in the thread pool, one
`run_in_threadpool` call per block (see `api.deps`), so a write waiting for SQLite's lock
never stalls the event loop.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine, delete, insert, select
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import (
    CurrentAccountId,
    EngineDep,
    LedgerDep,
    MediaStoreDep,
    SettingsDep,
    TemporalClientDep,
    TemporalDep,
    TitlesDep,
)
from api.errors import TemporalUnavailable, error_responses, unprocessable
from api.run_events import sse_response
from api.schemas import ErrorMessage
from api.scoping import id_path
from api.work_items import TitleCache, WorkItem, describe
from core import metrics
from core.logs import bind_log_context
from domain.images import BatchQuote, quote_batch
from domain.ledger import InsufficientCredits, Ledger
from models.db import utcnow
from models.pipeline import Image
from models.runs import ImageBatch
from providers.media_store import EXTENSIONS, MediaNotFound, MediaStore, content_type_of
from workflows.client import batch_account, new_batch_id, start_image_batch
from workflows.image_batch import BatchProgress, ControlInput, ImageBatchWorkflow

router = APIRouter(prefix="/images", tags=["images"], responses=error_responses(401))
logger = logging.getLogger("igny8.api")
BATCHES = ImageBatch.__table__
IMAGES = Image.__table__
FINISHED = frozenset({"completed", "failed", "cancelled"})

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


class BatchSnapshot(BatchProgress):
    """The batch's progress as the API shows it, with the images being generated now by
    name (`current_items`: the first few)."""

    current_items: list[WorkItem] = []


class ControlAccepted(BaseModel):
    batch_id: str
    requested: str


def _check_quote(quote: BatchQuote) -> None:
    """422 for unknown tasks, tasks without content, or a batch too big to plan."""
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


def _record_batch(
    engine: Engine, ledger: Ledger, account_id: int, task_ids: list[int], body: BatchCreate
) -> tuple[str, BatchQuote]:
    """Quote, check the available credits, and store the batch's row (blocking: run it in
    a thread). Returns the new batch id and its quote."""
    with engine.connect() as conn:
        quote = quote_batch(conn, account_id, task_ids, body.model, body.max_in_article_images)
    _check_quote(quote)
    available = ledger.balance(account_id).available
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
    return batch_id, quote


def _forget_batch(engine: Engine, batch_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(BATCHES).where(BATCHES.c.batch_id == batch_id))


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
    ledger: LedgerDep,
    settings: SettingsDep,
    client: TemporalClientDep,
) -> BatchStarted:
    """Quote the batch; 402 if it exceeds available credits, 422 for unknown tasks or
    tasks without content; otherwise start the workflow and answer 202 at once."""
    task_ids = list(dict.fromkeys(body.task_ids))
    batch_id, quote = await run_in_threadpool(
        _record_batch, engine, ledger, account_id, task_ids, body
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
        # Nothing half-written: no batch row without a workflow, even when the request
        # was cancelled (shielded, or the cancelled scope would skip the delete).
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_forget_batch, engine, batch_id)
        raise
    metrics.WORKFLOWS_STARTED.labels("image_batch").inc()
    bind_log_context(batch_id=batch_id, site_id=quote.site_id)
    logger.info("image batch started: %d images, %d credits quoted", quote.images, quote.credits)
    return BatchStarted(
        batch_id=batch_id, status="running", images=quote.images, credits_quoted=quote.credits
    )


def _owned_handle(
    client: TemporalClientDep, batch_id: str, account_id: int
) -> WorkflowHandle[ImageBatchWorkflow, BatchProgress]:
    """Another account's (or a malformed) batch id answers 404, never 403."""
    if batch_account(batch_id) != account_id:
        raise _batch_not_found(batch_id)
    return client.get_workflow_handle_for(ImageBatchWorkflow.run, batch_id)


def _batch_not_found(batch_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"Image batch {batch_id} not found")


def _batch_row(engine: Engine, batch_id: str, account_id: int) -> Any:
    """The batch's row, None if there is none yet; another account's row is a 404."""
    with engine.connect() as conn:
        row = conn.execute(select(BATCHES).where(BATCHES.c.batch_id == batch_id)).first()
    if row is not None and row.account_id != account_id:
        raise _batch_not_found(batch_id)
    return row


def _is_finished(row: Any) -> bool:
    return row.finished_at is not None or row.status in FINISHED


def _row_progress(row: Any, balance: int) -> BatchSnapshot:
    """A finished batch as its stored row tells it: nothing in flight or reserved."""
    return BatchSnapshot(
        batch_id=row.batch_id,
        status=row.status,
        pause_reason=None,
        images_total=row.images_total,
        images_done=row.images_done,
        images_failed=row.images_failed,
        images_in_flight=0,
        credits_reserved=0,
        credits_used=row.credits_used,
        cost_usd=row.cost_usd,
        balance=balance,
        errors=list(row.errors or []),
    )


def _stored_progress(
    engine: Engine, ledger: Ledger, batch_id: str, account_id: int
) -> tuple[bool, BatchProgress | None]:
    """(whether the account has a row for the batch, its progress if it has finished).
    Blocking: run it in a thread."""
    row = _batch_row(engine, batch_id, account_id)
    if row is None or not _is_finished(row):
        return row is not None, None
    return True, _row_progress(row, ledger.balance(account_id).credits)


@router.get(
    "/batches/{batch_id}", response_model=BatchSnapshot, responses=error_responses(404, 503)
)
async def get_batch(
    batch_id: BatchIdPath,
    account_id: CurrentAccountId,
    engine: EngineDep,
    ledger: LedgerDep,
    client: TemporalDep,
    titles: TitlesDep,
) -> BatchSnapshot:
    """A finished batch's stored summary (it answers even while Temporal is down), or a
    running batch's live progress from its workflow, with the images being generated now
    by name (`current_items`)."""
    return await batch_snapshot(client, engine, ledger, batch_id, account_id, titles)


@router.get(
    "/batches/{batch_id}/events",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "progress snapshots"},
        **error_responses(404, 503),
    },
    response_class=StreamingResponse,
)
async def batch_events(
    batch_id: BatchIdPath,
    request: Request,
    account_id: CurrentAccountId,
    engine: EngineDep,
    ledger: LedgerDep,
    client: TemporalDep,
    titles: TitlesDep,
) -> StreamingResponse:
    """Server-Sent Events: a `progress` event with the batch's snapshot (as `GET` gives
    it) whenever it changes, until the batch ends. Every watcher of a batch shares one
    query per tick."""
    # asked once here for the 404 (before streaming), and that answer is the first event
    first: BatchSnapshot | None = await batch_snapshot(
        client, engine, ledger, batch_id, account_id, titles
    )

    async def fetch() -> dict[str, Any]:
        nonlocal first
        snap = first or await batch_snapshot(client, engine, ledger, batch_id, account_id, titles)
        first = None
        return snap.model_dump(mode="json")

    return sse_response(request, f"batch:{batch_id}", fetch)


async def batch_snapshot(
    client: Client | None,
    engine: Engine,
    ledger: Ledger,
    batch_id: str,
    account_id: int,
    titles: TitleCache,
) -> BatchSnapshot:
    """The stored row once finished, else the workflow's answer with titles."""
    # The row first: a finished batch needs no worker to replay its history for a query.
    has_row, finished = await run_in_threadpool(
        _stored_progress, engine, ledger, batch_id, account_id
    )
    if finished is not None:
        return finished
    # No row yet (a batch an automation run started, before its plan): ask the workflow.
    if not has_row and batch_account(batch_id) != account_id:
        raise _batch_not_found(batch_id)
    if client is None:
        raise TemporalUnavailable()
    progress = await _query_progress(client, engine, ledger, batch_id, account_id)
    if isinstance(progress, BatchSnapshot):
        return progress
    wanted = [("images", "image", image_id) for image_id in progress.working_on]
    items = await run_in_threadpool(describe, engine, titles, account_id, wanted) if wanted else []
    return BatchSnapshot(**progress.model_dump(), current_items=items)


async def _query_progress(
    client: Client, engine: Engine, ledger: Ledger, batch_id: str, account_id: int
) -> BatchProgress:
    """The live `progress` query; if it fails, the row once the batch has finished since."""
    handle = client.get_workflow_handle_for(ImageBatchWorkflow.run, batch_id)
    try:
        return await handle.query(ImageBatchWorkflow.progress)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise _batch_not_found(batch_id) from err
        _, stored = await run_in_threadpool(_stored_progress, engine, ledger, batch_id, account_id)
        if stored is None:
            raise
        return stored
    except WorkflowQueryFailedError as err:
        _, stored = await run_in_threadpool(_stored_progress, engine, ledger, batch_id, account_id)
        if stored is None:
            raise HTTPException(503, f"Image batch {batch_id} cannot answer right now") from err
        return stored


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


# Private: only the owner may see it, so no shared cache may keep it, and the same URL
# answers another key differently. An hour: a generated image's bytes never change (only
# slots without a file are generated again), yet a deleted image stops being served soon.
FILE_HEADERS = {
    "Cache-Control": "private, max-age=3600",
    "Vary": "Authorization",
    "X-Content-Type-Options": "nosniff",
}
FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The image's bytes",
        "content": {
            mime: {"schema": {"type": "string", "format": "binary"}}
            for mime in ("image/png", "image/jpeg", "image/webp")
        },
    },
    **error_responses(404),
    503: {"model": ErrorMessage, "description": "The media store is unavailable; retry later"},
}
ImageIdPath = Annotated[int, id_path("The image's id")]


def _image_not_found(image_id: int, why: str = "not found") -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"Image {image_id} {why}")


def _file_key(engine: Engine, image_id: int, account_id: int) -> tuple[str, str]:
    """The store key and content type of the account's generated image, else a 404 (the
    same for another account's image as for an unknown id)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(
                IMAGES.c.account_id, IMAGES.c.status, IMAGES.c.file_path, IMAGES.c.mime_type
            ).where(IMAGES.c.id == image_id)
        ).first()
    if row is None or row.account_id != account_id:
        raise _image_not_found(image_id)
    if row.status != "generated" or not row.file_path:
        raise _image_not_found(image_id, f"has no file (status: {row.status})")
    # Only an image type we store is served as such: the bytes come from a provider.
    known = row.mime_type in EXTENSIONS
    return row.file_path, row.mime_type if known else content_type_of(row.file_path)


def _read_file(store: MediaStore, key: str, image_id: int) -> bytes:
    """The bytes under `key`; a missing file (or a key the store refuses) is a 404, a
    store that cannot answer a 503."""
    try:
        return store.get(key)
    except (MediaNotFound, ValueError) as exc:
        logger.warning("Image %s: no file under %r in the %s store", image_id, key, store.name)
        raise _image_not_found(image_id, "has no file (it is missing from storage)") from exc
    except Exception as exc:  # S3 down, a disk error: the store's trouble, not the request's
        logger.warning("Image %s: the %s store failed: %s", image_id, store.name, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "The media store is unavailable",
            headers={"Retry-After": "5"},
        ) from exc


# A plain `def`: the row and the store are read in FastAPI's thread pool, off the loop.
@router.get(
    "/{image_id}/file",
    response_class=Response,
    responses=FILE_RESPONSES,
    summary="A generated image's file",
)
def image_file(
    image_id: ImageIdPath,
    account_id: CurrentAccountId,
    engine: EngineDep,
    store: MediaStoreDep,
) -> Response:
    """The image's bytes with their content type, to its owner only (anyone else gets a
    404, as does an image not generated yet or whose file is missing)."""
    key, media_type = _file_key(engine, image_id, account_id)
    return Response(_read_file(store, key, image_id), media_type=media_type, headers=FILE_HEADERS)
