"""ImageBatchWorkflow: plan → reserve → generate in parallel → charge each image → release,
log and notify (DESIGN §4), on the run engine (workflows.engine).

Durable: a worker crash, a retry or a replay never charges twice, since every charge
carries the key `<batch_id>:image:<image_id>`. Provider calls are bounded provider-wide by
the model's `max_concurrency` inside the generate activity. Controls: signals pause /
resume / cancel, queries progress / credits; a cancel from the Temporal UI or CLI behaves
like the cancel signal. History stays bounded: the batch continues as new with its state.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, model_validator
from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.engine.control import ControlInput, ControlState, ProgressRequest, RunControl
from workflows.engine.items import (
    Deferred,
    Failed,
    ItemLoop,
    ItemOutcome,
    LoopState,
    Produced,
    StopPublisher,
)
from workflows.engine.metering import Charge, Meter, MeterState
from workflows.engine.policies import (
    DB_RETRY,
    DB_TIMEOUT,
    GENERATE_HEARTBEAT,
    GENERATE_RETRY,
    GENERATE_TIMEOUT,
    PLAN_TIMEOUT,
    SLOT_WAIT_S,
    message,
)

with workflow.unsafe.imports_passed_through():
    from activities.common import Frozen
    from activities.images import (
        FinishBatchInput,
        GenerateImageInput,
        GenerateImageOutput,
        ImageActivities,
        ImageSlot,
        MarkFailedInput,
        MarkFailedOutput,
        PlanInput,
        PlanOutput,
    )
    from activities.runs import RunActivities, RunStopInput
    from domain.ai_functions import GENERATE_IMAGES

__all__ = ["BatchProgress", "ControlInput", "ImageBatchInput", "ImageBatchWorkflow"]


class BatchState(BaseModel):
    """Everything the batch knows; carried across continue-as-new (only gains defaults)."""

    meter: MeterState = Field(default_factory=MeterState)
    control: ControlState = Field(default_factory=ControlState)
    loop: LoopState = Field(default_factory=LoopState)
    plan: PlanOutput | None = None  # without its slots: they live on in `pending` only
    pending: list[ImageSlot] = Field(default_factory=list)
    runs: int = 1

    @model_validator(mode="before")
    @classmethod
    def _from_release_1(cls, data: Any) -> Any:
        """The first release carried a flat state; a batch it continued as new resumes."""
        if not isinstance(data, dict) or "meter" in data or "task_log_id" not in data:
            return data
        return legacy_state(data)


class ImageBatchInput(Frozen):
    batch_id: str
    account_id: int
    task_ids: list[int]
    model: str | None = None
    max_in_article_images: int | None = None
    # Claims stop at this many events; then at most 2×C images drain, each adding at most
    # 12 events (two activities, two workflow tasks): 4000 + 24×200 < 10,240.
    history_limit: int = 4000
    state: BatchState | None = None


class BatchProgress(Frozen):
    batch_id: str
    status: str
    pause_reason: str | None
    images_total: int
    images_done: int
    images_failed: int
    images_in_flight: int
    credits_reserved: int
    credits_used: int
    cost_usd: Decimal
    balance: int | None
    errors: list[str]


class CreditsView(Frozen):
    balance: int | None
    credits_reserved: int
    credits_used: int
    cost_usd: Decimal


@workflow.defn
class ImageBatchWorkflow:
    @workflow.init
    def __init__(self, inp: ImageBatchInput) -> None:
        self.inp = inp
        self.s = inp.state or BatchState()
        self.control = RunControl(self.s.control)
        self.meter = Meter(
            GENERATE_IMAGES, inp.account_id, inp.batch_id, self.s.meter, inp.batch_id
        )
        self.stop = StopPublisher(self.control, self._publish_stop)
        self.loop = ItemLoop(
            self.s.pending,
            self.s.loop,
            self.control,
            self.meter,
            self,
            self.stop,
            concurrency=lambda: self.s.plan.max_concurrency if self.s.plan else 1,
            history_limit=inp.history_limit,
            on_change=self._publish_details,
        )

    # ---- controls ----------------------------------------------------------------
    @workflow.signal
    def pause(self, inp: ControlInput) -> None:
        self.control.pause(inp.reason or "user")

    @workflow.signal
    def resume(self, inp: ControlInput) -> None:
        self.control.resume()

    @workflow.signal
    def cancel(self, inp: ControlInput) -> None:
        self.control.cancel()

    @workflow.query
    def progress(self, _: ProgressRequest | None = None) -> BatchProgress:
        return self._progress()

    @workflow.query
    def credits(self, _: ProgressRequest | None = None) -> CreditsView:
        p = self._progress()
        return CreditsView(
            balance=p.balance,
            credits_reserved=p.credits_reserved,
            credits_used=p.credits_used,
            cost_usd=p.cost_usd,
        )

    # ---- run ---------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: ImageBatchInput) -> BatchProgress:
        try:
            if inp.state is None and not await self.control.shielded(self._start()):
                return self._progress()
            finished = await self.loop.run()
        except asyncio.CancelledError:  # a cancel from the Temporal UI/CLI
            self.control.temporal_cancel = True
            self.control.cancel()
            await self.control.shielded(self.stop.sync())
            await workflow.wait_condition(lambda: self.loop.in_flight == 0)
            finished = True
        if not finished:
            self.s.runs += 1
            workflow.continue_as_new(inp.model_copy(update={"state": self.s}))
        result = await self.control.shielded(self._finish())
        if self.control.temporal_cancel:
            raise asyncio.CancelledError("image batch cancelled")
        return result

    async def _start(self) -> bool:
        """Open the log, plan, reserve the whole quote; False if the batch cannot start."""
        inp = self.inp
        await self.meter.open(
            {
                "task_ids": inp.task_ids,
                "model": inp.model,
                "max_in_article_images": inp.max_in_article_images,
            },
            inp.model,
        )
        try:
            plan = await self._plan()
        except ActivityError as err:
            await self._fail(message(err), {})
            return False
        self.s.plan = plan.model_copy(update={"slots": []})
        self.s.pending.extend(plan.slots)
        self.s.loop.total = len(plan.slots)
        self.meter.state.model_name = plan.model_name
        self.meter.state.credit_price_usd = plan.credit_price_usd
        required = len(plan.slots) * plan.credits_per_image
        if required > 0:
            hold = await self.meter.reserve(required, f"{inp.batch_id}:hold")
            if not hold.ok:
                await self._fail(
                    hold.message, {"required": hold.required, "available": hold.available}
                )
                return False
        return True

    async def _plan(self) -> PlanOutput:
        inp = self.inp
        return await workflow.execute_activity_method(
            ImageActivities.plan_image_batch,
            PlanInput(
                batch_id=inp.batch_id,
                account_id=inp.account_id,
                task_ids=inp.task_ids,
                task_log_id=self.meter.state.task_log_id,
                model=inp.model,
                max_in_article_images=inp.max_in_article_images,
            ),
            start_to_close_timeout=PLAN_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Plan images for {len(inp.task_ids)} tasks",
        )

    # ---- one image (ItemWork) ----------------------------------------------------------
    def item_id(self, item: ImageSlot) -> int:
        return item.image_id

    async def process(self, item: ImageSlot) -> ItemOutcome:
        plan = self.s.plan
        assert plan is not None
        try:
            out = await workflow.execute_activity_method(
                ImageActivities.generate_image,
                GenerateImageInput(
                    batch_id=self.inp.batch_id,
                    account_id=self.inp.account_id,
                    image_id=item.image_id,
                    model_name=plan.model_name,
                    provider=plan.provider,
                    prompt=item.prompt,
                    cost_per_image=plan.cost_per_image,
                    credits_per_image=plan.credits_per_image,
                    max_concurrency=plan.max_concurrency,
                    slot_wait_s=SLOT_WAIT_S,
                ),
                start_to_close_timeout=GENERATE_TIMEOUT,
                heartbeat_timeout=GENERATE_HEARTBEAT,
                retry_policy=GENERATE_RETRY,
                summary=f"Generate {item.image_type} image {item.image_id} (task {item.task_id})",
            )
        except ActivityError as err:
            marked = await self._mark_failed(item.image_id, message(err), withdraw=False)
            if not marked.stored:
                return Failed(message(err))
            # an attempt stored it before failing: it is delivered, so it is charged
            out = GenerateImageOutput(
                image_id=item.image_id, status="generated", cost_usd=marked.cost_usd, reused=True
            )
        if out.status == "deferred":
            return Deferred()
        if out.status != "generated":
            return Failed(out.error or "failed")
        charge = Charge(
            item_id=item.image_id, credits=plan.credits_per_image, cost_usd=out.cost_usd
        )
        return Produced(charge, call_s=None if out.reused else out.provider_s)

    async def withdraw(self, item_id: int, error: str) -> None:
        await self._mark_failed(item_id, error, withdraw=True)

    async def paused(self, reason: str, message: str) -> None:
        await self.meter.notify_paused(
            reason,
            "Image batch paused",
            f"Image batch paused: {message}. Top up and resume to go on.",
            {"batch_id": self.inp.batch_id},
        )

    async def _mark_failed(self, image_id: int, error: str, withdraw: bool) -> MarkFailedOutput:
        return await workflow.execute_activity_method(
            ImageActivities.mark_image_failed,
            MarkFailedInput(image_id=image_id, error=error, withdraw=withdraw),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Mark image {image_id} failed (not charged)",
        )

    async def _publish_stop(self, stopped: bool) -> None:
        await workflow.execute_activity_method(
            RunActivities.set_run_stopped,
            RunStopInput(workflow_id=self.inp.batch_id, stopped=stopped),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="Stop waiting provider calls" if stopped else "Let provider calls go on",
        )

    # ---- the end -----------------------------------------------------------------------
    async def _finish(self) -> BatchProgress:
        await self.loop.settle()
        await self.meter.release()
        s = self.s.loop
        if self.s.control.cancel_requested:
            self.control.decide("cancelled")
        elif s.done == 0 and s.failed > 0:
            self.control.decide("failed")
        else:
            self.control.decide("completed")
        outcome = self.control.decided
        error = "; ".join(s.errors) if outcome == "failed" else None
        await asyncio.gather(
            self.meter.close(outcome, self._summary(), error),
            self._final_notification(outcome),
            self._record(outcome),
        )
        self.control.finished()
        self._publish_details()
        return self._progress()

    async def _final_notification(self, outcome: str) -> None:
        s, m = self.s.loop, self.meter.state
        failed = f", {s.failed} failed" if s.failed else ""
        money = f"{m.credits_used} credits (${m.cost_usd:.4f} provider cost)"
        if outcome == "completed":
            await self.meter.notify(
                "success", "Images generated", f"Generated {s.done} images using {money}{failed}",
                self._summary(),
            )  # fmt: skip
        elif outcome == "cancelled":
            await self.meter.notify(
                "cancelled", "Image batch cancelled",
                f"Cancelled after {s.done} images using {money}{failed}", self._summary(),
            )  # fmt: skip
        else:
            await self.meter.notify(
                "failed", "Image generation failed",
                f"Image generation failed: {s.failed} images failed ({'; '.join(s.errors)})",
                self._summary(),
            )  # fmt: skip

    async def _fail(self, reason: str, details: dict[str, int]) -> None:
        """End before any generation: log error, notify, record; nothing was charged."""
        self.control.decide("failed")
        self.s.loop.errors = [reason]
        await self.meter.close("failed", dict(details), reason)
        await self.meter.notify("failed", "Image generation failed", reason, dict(details))
        await self._record("failed")
        self.control.finished()

    async def _record(self, outcome: str) -> None:
        s, m = self.s.loop, self.meter.state
        await workflow.execute_activity_method(
            ImageActivities.finish_image_batch,
            FinishBatchInput(
                batch_id=self.inp.batch_id,
                status=outcome,
                images_total=s.total,
                images_done=s.done,
                images_failed=s.failed,
                credits_used=m.credits_used,
                cost_usd=m.cost_usd,
                errors=list(s.errors),
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Record the batch as {outcome}",
        )

    # ---- views -------------------------------------------------------------------------
    def _progress(self) -> BatchProgress:
        s, m = self.s.loop, self.meter.state
        return BatchProgress(
            batch_id=self.inp.batch_id,
            status=self.control.status,
            pause_reason=self.control.pause_reason,
            images_total=s.total,
            images_done=s.done,
            images_failed=s.failed,
            images_in_flight=self.loop.in_flight,
            credits_reserved=0 if self.control.final else self.meter.reserved_left(),
            credits_used=m.credits_used,
            cost_usd=m.cost_usd,
            balance=m.balance,
            errors=list(s.errors),
        )

    def _summary(self) -> dict[str, object]:
        p = self._progress()
        return {
            "images_total": p.images_total,
            "images_done": p.images_done,
            "images_failed": p.images_failed,
            "credits_used": p.credits_used,
            "cost_usd": str(p.cost_usd),
            "balance": p.balance,
            "status": self.control.decided,
            "batch_id": self.inp.batch_id,
        }

    def _publish_details(self) -> None:
        """The Temporal UI's "current details"; built from state (called per image)."""
        p = self._progress()
        workflow.set_current_details(
            f"**{p.status}** · images {p.images_done}/{p.images_total} done, "
            f"{p.images_failed} failed, {p.images_in_flight} in flight · "
            f"credits used {p.credits_used} · ${p.cost_usd:.4f} · balance {p.balance}"
        )


def legacy_state(old: dict[str, Any]) -> dict[str, Any]:
    """The first release's flat BatchState, in today's shape."""
    plan = old.get("plan") or {}
    credits = int(plan.get("credits_per_image") or 0)
    billed = Decimal(str(plan.get("billed_usd_per_image") or "0"))
    return {
        "meter": {
            "task_log_id": old["task_log_id"],
            "model_name": plan.get("model_name"),
            "credit_price_usd": billed / credits if credits else Decimal("0.01"),
            "hold_ids": [old["hold_id"]] if old.get("hold_id") else [],
            "credits_reserved": old.get("credits_reserved", 0),
            "credits_used": old.get("credits_used", 0),
            "cost_usd": old.get("cost_usd", "0"),
            "balance": old.get("balance"),
            "notes": old.get("pauses", 0),
        },
        "control": {
            "paused": old.get("paused", False),
            "pause_reason": old.get("pause_reason"),
            "pauses": old.get("pauses", 0),
            "cancel_requested": old.get("cancel_requested", False),
        },
        "loop": {
            "total": old.get("images_total", 0),
            "done": old.get("images_done", 0),
            "failed": old.get("images_failed", 0),
            "errors": old.get("errors", []),
            "uncharged": [
                {"item_id": c["image_id"], "credits": credits, "cost_usd": c["cost_usd"]}
                for c in old.get("uncharged", [])
            ],
            "call_s": old.get("call_s"),
        },
        "plan": plan or None,
        "pending": old.get("pending", []),
        "runs": old.get("runs", 1),
    }
