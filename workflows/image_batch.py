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
from typing import Any, NoReturn

from pydantic import Field, model_validator
from temporalio import workflow
from temporalio.exceptions import ActivityError

# The engine and the activities are plain, deterministic modules: imported once in the
# worker and passed through the sandbox, not re-imported for every workflow run.
with workflow.unsafe.imports_passed_through():
    from activities.common import Frozen
    from activities.images import (
        FinishBatchInput,
        GenerateImageInput,
        GenerateImageOutput,
        GenerateImagesInput,
        ImageActivities,
        ImageSlot,
        MarkFailedInput,
        MarkFailedOutput,
        PlanInput,
        PlanOutput,
    )
    from domain.ai_functions import GENERATE_IMAGES
    from workflows.engine.batch import BatchState, MeteredBatch
    from workflows.engine.control import ControlInput, ProgressRequest
    from workflows.engine.items import (
        DEEP_MIN_CALL_S,
        HISTORY_LIMIT,
        Deferred,
        Failed,
        ItemOutcome,
        Produced,
    )
    from workflows.engine.metering import Charge
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

__all__ = ["BatchProgress", "ControlInput", "ImageBatchInput", "ImageBatchWorkflow"]

# Lanes: with a fast provider and a wide model, the cost of an activity per image (its
# scheduling, dispatch and the workflow task it wakes) bounds throughput, not the provider,
# so images go out up to LANE_SIZE to an activity. Only then: with slow calls a lane would
# hold finished images back, and a narrow model is bound by the provider anyway.
LANES_PATCH = "image-batch-lanes-for-fast-wide-models"
LANE_SIZE = 4
LANE_MIN_CONCURRENCY = 4 * LANE_SIZE


class _Lane:
    """Images claimed together, waiting to go out in one `generate_images` activity."""

    def __init__(self) -> None:
        self.items: list[ImageSlot] = []
        self.closed = False
        self.sender: asyncio.Task[None] | None = None
        self.done: asyncio.Future[dict[int, GenerateImageOutput] | None] = (
            asyncio.get_running_loop().create_future()
        )


class ImageBatchState(BatchState):
    """Everything the batch knows; carried across continue-as-new (only gains defaults)."""

    plan: PlanOutput | None = None  # without its slots: they live on in `pending` only
    pending: list[ImageSlot] = Field(default_factory=list)

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
    history_limit: int = HISTORY_LIMIT  # claims stop here; the drain stays under 10,240
    parent_id: str | None = None  # the automation run that started it, told by signal
    state: ImageBatchState | None = None


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
    working_on: list[int] = []  # ids of the first few images being generated now


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
        self.s = inp.state or ImageBatchState()
        self.batch = MeteredBatch(
            GENERATE_IMAGES,
            inp.account_id,
            inp.batch_id,
            self.s,
            self.s.pending,
            self,
            concurrency=lambda: self.s.plan.max_concurrency if self.s.plan else 1,
            history_limit=inp.history_limit,
            on_change=lambda: workflow.set_current_details(self.batch.details()),
            parent_id=inp.parent_id,
        )
        self._lane: _Lane | None = None  # the lane being filled (in memory: none is open
        # when the state is carried over, as nothing is in flight then)

    # ---- controls ----------------------------------------------------------------
    @workflow.signal
    def pause(self, inp: ControlInput) -> None:
        self.batch.control.pause(inp.reason or "user")

    @workflow.signal
    def resume(self, inp: ControlInput) -> None:
        self.batch.control.resume()

    @workflow.signal
    def cancel(self, inp: ControlInput) -> None:
        self.batch.control.cancel()

    @workflow.query
    def progress(self, _: ProgressRequest | None = None) -> BatchProgress:
        c = self.batch.counts()
        return BatchProgress(
            batch_id=self.inp.batch_id,
            status=c.status,
            pause_reason=c.pause_reason,
            images_total=c.total,
            images_done=c.done,
            images_failed=c.failed,
            images_in_flight=c.in_flight,
            credits_reserved=c.credits_reserved,
            credits_used=c.credits_used,
            cost_usd=c.cost_usd,
            balance=c.balance,
            errors=c.errors,
            working_on=c.working_on,
        )

    @workflow.query
    def credits(self, _: ProgressRequest | None = None) -> CreditsView:
        c = self.batch.counts()
        return CreditsView(
            balance=c.balance,
            credits_reserved=c.credits_reserved,
            credits_used=c.credits_used,
            cost_usd=c.cost_usd,
        )

    # ---- run ---------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: ImageBatchInput) -> BatchProgress:
        await self.batch.run(inp.state is None, self._start, self._record, self._roll)
        return self.progress()

    def _roll(self) -> NoReturn:
        workflow.continue_as_new(self.inp.model_copy(update={"state": self.s}))

    async def _start(self) -> bool:
        """Open the log, plan, reserve the whole quote; False if the batch cannot start."""
        inp, meter = self.inp, self.batch.meter
        payload = {
            "task_ids": inp.task_ids,
            "model": inp.model,
            "max_in_article_images": inp.max_in_article_images,
        }
        # The log and the plan at once: the plan does not need the log (one round trip less).
        opened, plan = await asyncio.gather(
            meter.open(payload, inp.model), self._plan(), return_exceptions=True
        )
        if isinstance(opened, BaseException):
            raise opened
        if isinstance(plan, BaseException):
            if not isinstance(plan, ActivityError):
                raise plan
            await self.batch.fail(message(plan), {}, self._record)
            return False
        self.s.plan = plan.model_copy(update={"slots": []})
        self.s.pending.extend(plan.slots)
        self.s.loop.total = len(plan.slots)
        meter.state.model_name = plan.model_name
        meter.state.credit_price_usd = plan.credit_price_usd
        required = len(plan.slots) * plan.credits_per_image
        if required > 0:
            epoch = self.batch.control.epoch
            hold = await meter.reserve(required, f"{inp.batch_id}:hold")
            if not hold.ok:
                details = {"required": hold.required, "available": hold.available}
                await self.batch.fail(hold.message, details, self._record, refused_at=epoch)
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
        if self._lanes_apply():
            out = await self._in_lane(item)
            if out is not None and out.status != "retry":
                return self._outcome(item, out)
            # the provider refused it for now, or the lane failed: alone, under the full
            # retry policy, looking first for what the lane stored
            return await self._alone(item, recheck=out is None)
        return await self._alone(item)

    async def _alone(self, item: ImageSlot, recheck: bool = False) -> ItemOutcome:
        try:
            out = await workflow.execute_activity_method(
                ImageActivities.generate_image,
                self._generate_input(item, recheck),
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
        return self._outcome(item, out)

    def _generate_input(self, item: ImageSlot, recheck: bool = False) -> GenerateImageInput:
        plan = self.s.plan
        assert plan is not None
        return GenerateImageInput(
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
            recheck=recheck,
        )

    def _outcome(self, item: ImageSlot, out: GenerateImageOutput) -> ItemOutcome:
        plan = self.s.plan
        assert plan is not None
        if out.status == "deferred":
            return Deferred()
        if out.status != "generated":
            return Failed(out.error or "failed")
        charge = Charge(
            item_id=item.image_id, credits=plan.credits_per_image, cost_usd=out.cost_usd
        )
        return Produced(charge, call_s=None if out.reused else out.provider_s)

    # ---- lanes (fast calls on a wide model) ------------------------------------------------
    def _lanes_apply(self) -> bool:
        plan, call_s = self.s.plan, self.s.loop.call_s
        return (
            plan is not None
            and plan.max_concurrency >= LANE_MIN_CONCURRENCY
            and call_s is not None
            and call_s < DEEP_MIN_CALL_S
            and workflow.patched(LANES_PATCH)
        )

    async def _in_lane(self, item: ImageSlot) -> GenerateImageOutput | None:
        """Join the lane being filled (or open one); its outcome for this image, or None
        if the lane failed."""
        lane = self._lane
        if lane is None or lane.closed:
            lane = self._lane = _Lane()
            lane.sender = asyncio.create_task(self._send_lane(lane))
        lane.items.append(item)
        lane.closed = len(lane.items) >= LANE_SIZE
        outcomes = await lane.done
        return None if outcomes is None else outcomes.get(item.image_id)

    async def _send_lane(self, lane: _Lane) -> None:
        """Once the lane is full or the loop claims nothing more now, one activity."""
        await workflow.wait_condition(lambda: lane.closed or not self.batch.loop.can_claim())
        lane.closed = True
        if self._lane is lane:
            self._lane = None
        ids = ", ".join(str(i.image_id) for i in lane.items)
        outcomes = None
        try:
            out = await workflow.execute_activity_method(
                ImageActivities.generate_images,
                GenerateImagesInput(images=[self._generate_input(i) for i in lane.items]),
                start_to_close_timeout=GENERATE_TIMEOUT,
                heartbeat_timeout=GENERATE_HEARTBEAT,
                retry_policy=GENERATE_RETRY,
                summary=f"Generate images {ids}",
            )
            outcomes = {o.image_id: o for o in out.images}
        except ActivityError:
            pass  # each image goes alone
        finally:
            lane.done.set_result(outcomes)

    def delivered(self, item_id: int, result: dict[str, object] | None) -> None:
        """A batch's items go nowhere next."""

    async def withdraw(self, item_id: int, error: str) -> None:
        await self._mark_failed(item_id, error, withdraw=True)

    async def _mark_failed(self, image_id: int, error: str, withdraw: bool) -> MarkFailedOutput:
        return await workflow.execute_activity_method(
            ImageActivities.mark_image_failed,
            MarkFailedInput(image_id=image_id, error=error, withdraw=withdraw),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Mark image {image_id} failed (not charged)",
        )

    async def _record(self, outcome: str) -> None:
        c = self.batch.counts()
        await workflow.execute_activity_method(
            ImageActivities.finish_image_batch,
            FinishBatchInput(
                batch_id=self.inp.batch_id,
                status=outcome,
                images_total=c.total,
                images_done=c.done,
                images_failed=c.failed,
                credits_used=c.credits_used,
                cost_usd=c.cost_usd,
                errors=c.errors,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Record the batch as {outcome}",
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
