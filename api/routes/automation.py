"""Automation runs: start one per site (409 while one is active), list them from their rows,
watch one live (its progress, or Server-Sent Events), pause, resume and cancel it.

Routes that talk to Temporal are `async`; their database work runs in the thread pool
(see `api.deps`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine, delete, select
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.common import QueryRejectCondition
from temporalio.service import RPCError, RPCStatusCode

from api.deps import (
    CurrentAccountId,
    EngineDep,
    LedgerDep,
    SessionDep,
    SettingsDep,
    TemporalClientDep,
    TemporalDep,
    TitlesDep,
)
from api.errors import TemporalUnavailable, error_responses
from api.pagination import Page, PageDep, paginate
from api.run_events import FINAL, sse_response
from api.scoping import MAX_ID
from api.work_items import STAGE_KINDS, TitleCache, WorkItem, describe
from core import metrics
from core.logs import bind_log_context
from domain.automation import active_run, claim_site
from domain.ledger import Ledger
from models.runs import AutomationRun
from models.sites import Site
from workflows.automation_run import (
    AutomationRunWorkflow,
    RunProgress,
    StageProgress,
)
from workflows.client import new_run_id, run_owner, start_automation_run
from workflows.engine.control import ControlInput
from workflows.image_batch import BatchProgress, ImageBatchWorkflow

router = APIRouter(prefix="/automation", tags=["automation"], responses=error_responses(401))
RUNS = AutomationRun.__table__
SITES = Site.__table__

RunIdPath = Annotated[str, Path(max_length=120, description="The run id from POST")]


class RunCreate(BaseModel):
    site_id: int = Field(ge=1, le=MAX_ID)
    budget_credits: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="Pause the run once it has used this many"
    )


class RunStarted(BaseModel):
    run_id: str
    status: str


class RunControlBody(BaseModel):
    budget_credits: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="On resume: a new budget for the run"
    )


class RunSnapshot(RunProgress):
    """The run's progress as the API shows it: the live balance, and the items being
    worked on now by title (the first few of each running stage)."""

    current_items: list[WorkItem] = []


class RunControlAccepted(BaseModel):
    run_id: str
    requested: str


class RunPublic(BaseModel):
    """A run as its row tells it (kept in step by the workflow)."""

    run_id: str
    site_id: int
    status: str
    pause_reason: str | None
    current_stage: str | None
    budget_credits: int | None
    credits_used: int
    cost_usd: Any
    summary: dict[str, Any]
    started_at: Any
    finished_at: Any | None

    model_config = {"from_attributes": True}


def _not_found(run_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"Automation run {run_id} not found")


def _claim(engine: Engine, account_id: int, site_id: int, budget: int | None) -> str:
    with engine.begin() as conn:
        owner = conn.execute(select(SITES.c.account_id).where(SITES.c.id == site_id)).scalar()
        if owner != account_id:
            raise HTTPException(404, f"Site {site_id} not found")
        run_id = new_run_id(account_id, site_id)
        if not claim_site(conn, run_id, account_id, site_id, budget):
            busy = active_run(conn, site_id)
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"Site {site_id} already has an active automation run ({busy}); "
                "pause, resume or cancel that one",
            )
    return run_id


def _forget(engine: Engine, run_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(RUNS).where(RUNS.c.run_id == run_id))


@router.post(
    "/runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunStarted,
    responses=error_responses(404, 409, 503),
)
async def start_run(
    body: RunCreate,
    account_id: CurrentAccountId,
    engine: EngineDep,
    settings: SettingsDep,
    client: TemporalClientDep,
) -> RunStarted:
    """Start a run for the site: every stage's unprocessed work, charged as it goes."""
    run_id = await run_in_threadpool(_claim, engine, account_id, body.site_id, body.budget_credits)
    try:
        await start_automation_run(
            client,
            settings.task_queue,
            account_id=account_id,
            site_id=body.site_id,
            run_id=run_id,
            budget_credits=body.budget_credits,
        )
    except BaseException:
        with anyio.CancelScope(shield=True):  # no claimed site without a workflow
            await run_in_threadpool(_forget, engine, run_id)
        raise
    metrics.WORKFLOWS_STARTED.labels("automation_run").inc()
    bind_log_context(run_id=run_id, site_id=body.site_id)
    return RunStarted(run_id=run_id, status="running")


@router.get("/runs", response_model=Page[RunPublic])
def list_runs(
    account_id: CurrentAccountId,
    session: SessionDep,
    page: PageDep,
    site_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    status_: Annotated[str | None, Query(alias="status", max_length=20)] = None,
) -> Page[Any]:
    """The account's runs, newest first, from their rows."""
    stmt = select(AutomationRun).where(AutomationRun.account_id == account_id)
    if site_id is not None:
        stmt = stmt.where(AutomationRun.site_id == site_id)
    if status_ is not None:
        stmt = stmt.where(AutomationRun.status == status_)
    stmt = stmt.order_by(AutomationRun.started_at.desc(), AutomationRun.id.desc())
    return paginate(session, stmt, page, RunPublic)


def _row(engine: Engine, run_id: str, account_id: int) -> Any:
    with engine.connect() as conn:
        row = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).first()
    if row is None or row.account_id != account_id:
        raise _not_found(run_id)
    return row


def _row_progress(row: Any, balance: int) -> RunSnapshot:
    stages = [StageProgress(**s) for s in (row.summary or {}).get("stages", [])]
    return RunSnapshot(
        run_id=row.run_id,
        site_id=row.site_id,
        status=row.status,
        pause_reason=row.pause_reason,
        current_stage=row.current_stage,
        stages=stages,
        credits_used=row.credits_used,
        cost_usd=row.cost_usd,
        balance=balance,
        budget_credits=row.budget_credits,
    )


def _over(row: Any) -> bool:
    """The run's row says it has ended: its progress is the row's from now on."""
    return row.finished_at is not None or row.status in FINAL


async def run_snapshot(
    client: Client | None,
    engine: Engine,
    ledger: Ledger,
    run_id: str,
    account_id: int,
    titles: TitleCache,
    pushed: RunProgress | None = None,
) -> RunSnapshot:
    """A finished run from its row; a running one from its workflow (the row if the
    workflow cannot answer), or from the progress it `pushed` (no query then). The
    balance is the ledger's, live. The row, the workflow's answer and the balance are
    asked at once: a snapshot waits for the slowest of them, not their sum (what an SSE
    watcher's delay is made of)."""
    if client is None and pushed is None:
        row = await run_in_threadpool(_row, engine, run_id, account_id)  # 404 before 503
        if not _over(row):
            raise TemporalUnavailable()
    handle = client.get_workflow_handle_for(AutomationRunWorkflow.run, run_id) if client else None

    async def ask() -> RunProgress | None:
        if pushed is not None or handle is None:
            return pushed
        try:
            # a closed run is not asked: its worker would replay its whole history to
            # answer, and its row holds the final progress
            return await handle.query(
                AutomationRunWorkflow.progress, reject_condition=QueryRejectCondition.NOT_OPEN
            )
        except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
            return None

    row, progress, bal = await asyncio.gather(
        run_in_threadpool(_row, engine, run_id, account_id),
        ask(),
        run_in_threadpool(ledger.balance, account_id),
    )
    if _over(row) or progress is None:
        return _row_progress(row, bal.credits)
    if progress.status in FINAL:
        # The workflow decides its outcome just before its last activity writes the row
        # and frees the site; until then the run is not over for anyone (a new start
        # would still get a 409), so a final status is only ever the row's.
        row = await run_in_threadpool(_row, engine, run_id, account_id)
        if _over(row):
            return _row_progress(row, bal.credits)
        progress = progress.model_copy(update={"status": row.status})
    wanted = [
        (st.name, STAGE_KINDS[st.name], item_id)
        for st in progress.stages
        if st.status == "running" and st.name in STAGE_KINDS
        for item_id in st.working_on
    ]
    items = await run_in_threadpool(describe, engine, titles, account_id, wanted) if wanted else []
    return RunSnapshot(**{**progress.model_dump(), "balance": bal.credits, "current_items": items})


@router.get("/runs/{run_id}", response_model=RunSnapshot, responses=error_responses(404, 503))
async def get_run(
    run_id: RunIdPath,
    account_id: CurrentAccountId,
    engine: EngineDep,
    ledger: LedgerDep,
    client: TemporalDep,
    titles: TitlesDep,
) -> RunSnapshot:
    """The run's progress: status, pause reason, each stage's counts, credits and balance,
    and the items being worked on now (`current_items`, by title)."""
    return await run_snapshot(client, engine, ledger, run_id, account_id, titles)


class LiveImages:
    """The live counts of a run's running image batches (the run learns them only when
    each batch ends), a `Side` of the run's event stream: polled by their own task, so a
    slow batch query never holds up the run's progress."""

    FIELDS = ("images_done", "images_in_flight", "images_failed")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.counts: dict[str, tuple[int, int, int]] = {}

    async def poll(self, main: dict[str, Any]) -> None:
        """Ask every running batch at once: a poll waits for the slowest, not their sum."""
        batch_ids: list[str] = list(main.get("active_batches") or [])

        async def ask(batch_id: str) -> BatchProgress | None:
            handle = self.client.get_workflow_handle_for(ImageBatchWorkflow.run, batch_id)
            try:
                # a closed batch is not asked: its worker would replay its whole history
                # to answer, and the run's own counts hold its images once it has ended
                return await handle.query(
                    ImageBatchWorkflow.progress, reject_condition=QueryRejectCondition.NOT_OPEN
                )
            except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
                return None  # finished or not yet started: the run's own counts hold it

        answers = await asyncio.gather(*(ask(batch_id) for batch_id in batch_ids))
        self.counts = {
            batch_id: (p.images_done, p.images_in_flight, p.images_failed)
            for batch_id, p in zip(batch_ids, answers, strict=True)
            if p is not None
        }

    def merge(self, main: dict[str, Any]) -> dict[str, Any]:
        """`main` plus the summed counts of the batches it still lists as running (a batch
        that has ended is in the run's own counts, so its live numbers are dropped)."""
        active = main.get("active_batches") or []
        if not active or main.get("status") in FINAL:
            return main
        known = [self.counts[b] for b in active if b in self.counts]
        totals = {name: sum(c[i] for c in known) for i, name in enumerate(self.FIELDS)}
        return {**main, "live_images": totals}


@router.get(
    "/runs/{run_id}/events",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "progress snapshots"},
        **error_responses(404, 503),
    },
    response_class=StreamingResponse,
)
async def run_events(
    run_id: RunIdPath,
    request: Request,
    account_id: CurrentAccountId,
    engine: EngineDep,
    ledger: LedgerDep,
    client: TemporalDep,
    titles: TitlesDep,
) -> StreamingResponse:
    """Server-Sent Events: a `progress` event with the run's snapshot (stages, credits,
    the live balance, the running image batches' counts) whenever it changes, until the
    run ends. Every watcher of a run shares one query per tick."""
    await run_in_threadpool(_row, engine, run_id, account_id)  # 404 before streaming

    async def fetch() -> dict[str, Any]:
        snap = await run_snapshot(client, engine, ledger, run_id, account_id, titles)
        return snap.model_dump(mode="json")

    async def apply(progress: dict[str, Any] | None) -> dict[str, Any]:
        if progress is None:  # the note was too large to carry it
            return await fetch()
        pushed = RunProgress.model_validate(progress)
        if pushed.run_id != run_id:  # any database role can NOTIFY: show only this run's
            return await fetch()
        snap = await run_snapshot(client, engine, ledger, run_id, account_id, titles, pushed)
        return snap.model_dump(mode="json")

    side = LiveImages(client) if client is not None else None
    return sse_response(request, run_id, fetch, side, apply)


async def _control(
    client: Client, run_id: str, account_id: int, name: str, body: ControlInput
) -> RunControlAccepted:
    owner = run_owner(run_id)
    if owner is None or owner[0] != account_id:
        raise _not_found(run_id)
    handle = client.get_workflow_handle_for(AutomationRunWorkflow.run, run_id)
    signal = {
        "pause": AutomationRunWorkflow.pause,
        "resume": AutomationRunWorkflow.resume,
        "cancel": AutomationRunWorkflow.cancel,
    }[name]
    try:
        await handle.signal(signal, body)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            try:
                desc = await handle.describe()
            except RPCError as missing:
                raise _not_found(run_id) from missing
            state = desc.status.name.lower() if desc.status else "closed"
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"Automation run {run_id} has already finished ({state})"
            ) from err
        raise
    return RunControlAccepted(run_id=run_id, requested=name)


CONTROL_RESPONSES = error_responses(404, 409, 503)


@router.post("/runs/{run_id}/pause", status_code=202, responses=CONTROL_RESPONSES)
async def pause_run(
    run_id: RunIdPath, account_id: CurrentAccountId, client: TemporalClientDep
) -> RunControlAccepted:
    """Claim nothing new (in every stage and image batch); work in flight lands and is
    charged. The pause lasts across worker restarts."""
    return await _control(client, run_id, account_id, "pause", ControlInput(reason="user"))


@router.post("/runs/{run_id}/resume", status_code=202, responses=CONTROL_RESPONSES)
async def resume_run(
    run_id: RunIdPath,
    account_id: CurrentAccountId,
    client: TemporalClientDep,
    body: RunControlBody | None = None,
) -> RunControlAccepted:
    """Go on where the run stopped (after a top-up, or with a raised budget)."""
    control = ControlInput(budget_credits=body.budget_credits if body else None)
    return await _control(client, run_id, account_id, "resume", control)


@router.post("/runs/{run_id}/cancel", status_code=202, responses=CONTROL_RESPONSES)
async def cancel_run(
    run_id: RunIdPath, account_id: CurrentAccountId, client: TemporalClientDep
) -> RunControlAccepted:
    """Stop claiming, let in-flight work land, stop the image batches, release holds."""
    return await _control(client, run_id, account_id, "cancel", ControlInput(reason="user"))
