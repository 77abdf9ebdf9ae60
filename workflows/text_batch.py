"""TextBatchWorkflow: one text AI function over a list of items, on the run engine.

plan (the model, the items still needing the function) → reserve the estimate → one
metered call per item in parallel within the model's provider-wide limit → charge each
as it lands (key `<batch_id>:<item kind>:<item id>`) → release, log and notify with the
function's own types. Used stand-alone (`generate_image_prompts` for a list of articles)
and by the automation run for its text stages.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import NoReturn

from pydantic import Field
from temporalio import workflow
from temporalio.exceptions import ActivityError

# The engine and the activities are plain, deterministic modules: imported once in the
# worker and passed through the sandbox, not re-imported for every workflow run.
with workflow.unsafe.imports_passed_through():
    from activities.common import Frozen
    from activities.text import (
        TextActivities,
        TextCallInput,
        TextModel,
        TextPlanInput,
        TextPlanOutput,
        WithdrawTextInput,
    )
    from domain.ai_functions import ai_function
    from workflows.engine.batch import BatchState, MeteredBatch
    from workflows.engine.control import ControlInput, ProgressRequest
    from workflows.engine.items import HISTORY_LIMIT, Deferred, Failed, ItemOutcome, Produced
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

__all__ = ["ControlInput", "TextBatchInput", "TextBatchProgress", "TextBatchWorkflow"]


class TextBatchState(BatchState):
    """Carried across continue-as-new (only gains fields with defaults)."""

    model: TextModel | None = None
    pending: list[int] = Field(default_factory=list)


class TextBatchInput(Frozen):
    batch_id: str
    account_id: int
    function_name: str
    item_ids: list[int]
    model: str | None = None
    site_id: int | None = None
    history_limit: int = HISTORY_LIMIT  # claims stop here; the drain stays under 10,240
    state: TextBatchState | None = None


class TextBatchProgress(Frozen):
    batch_id: str
    function_name: str
    status: str
    pause_reason: str | None
    items_total: int
    items_done: int
    items_failed: int
    items_in_flight: int
    credits_reserved: int
    credits_used: int
    cost_usd: Decimal
    balance: int | None
    errors: list[str]


@workflow.defn
class TextBatchWorkflow:
    @workflow.init
    def __init__(self, inp: TextBatchInput) -> None:
        self.inp = inp
        self.fn = ai_function(inp.function_name)
        self.s = inp.state or TextBatchState()
        self.batch = MeteredBatch(
            self.fn,
            inp.account_id,
            inp.batch_id,
            self.s,
            self.s.pending,
            self,
            concurrency=lambda: self.s.model.max_concurrency if self.s.model else 1,
            history_limit=inp.history_limit,
            on_change=lambda: workflow.set_current_details(self.batch.details()),
        )

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
    def progress(self, _: ProgressRequest | None = None) -> TextBatchProgress:
        c = self.batch.counts()
        return TextBatchProgress(
            batch_id=self.inp.batch_id,
            function_name=self.fn.name,
            status=c.status,
            pause_reason=c.pause_reason,
            items_total=c.total,
            items_done=c.done,
            items_failed=c.failed,
            items_in_flight=c.in_flight,
            credits_reserved=c.credits_reserved,
            credits_used=c.credits_used,
            cost_usd=c.cost_usd,
            balance=c.balance,
            errors=c.errors,
        )

    @workflow.run
    async def run(self, inp: TextBatchInput) -> TextBatchProgress:
        await self.batch.run(inp.state is None, self._start, self._record, self._roll)
        return self.progress()

    def _roll(self) -> NoReturn:
        workflow.continue_as_new(self.inp.model_copy(update={"state": self.s}))

    async def _start(self) -> bool:
        inp, meter = self.inp, self.batch.meter
        # The log and the plan at once: the plan does not need the log (one round trip less).
        opened, plan = await asyncio.gather(
            meter.open({"item_ids": inp.item_ids, "model": inp.model}, inp.model),
            self._plan(),
            return_exceptions=True,
        )
        if isinstance(opened, BaseException):
            raise opened
        if isinstance(plan, BaseException):
            if not isinstance(plan, ActivityError):
                raise plan
            await self.batch.fail(message(plan), {}, self._record)
            return False
        self.s.model = plan.model
        self.s.pending.extend(plan.item_ids)
        self.s.loop.total = len(plan.item_ids)
        meter.state.model_name = plan.model.model_name
        meter.state.credit_price_usd = plan.credit_price_usd
        required = len(plan.item_ids) * plan.credits_per_item
        if required > 0:
            epoch = self.batch.control.epoch
            hold = await meter.reserve(required, f"{inp.batch_id}:hold")
            if not hold.ok:
                details = {"required": hold.required, "available": hold.available}
                await self.batch.fail(hold.message, details, self._record, refused_at=epoch)
                return False
        return True

    async def _plan(self) -> TextPlanOutput:
        inp = self.inp
        return await workflow.execute_activity_method(
            TextActivities.plan_text_batch,
            TextPlanInput(
                function_name=inp.function_name,
                account_id=inp.account_id,
                item_ids=inp.item_ids,
                model=inp.model,
                site_id=inp.site_id,
            ),
            start_to_close_timeout=PLAN_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Plan {self.fn.name} for {len(inp.item_ids)} {self.fn.items_label}",
        )

    # ---- one item (ItemWork) -------------------------------------------------------
    def item_id(self, item: int) -> int:
        return item

    async def process(self, item: int) -> ItemOutcome:
        model = self.s.model
        assert model is not None
        try:
            out = await workflow.execute_activity_method(
                TextActivities.generate_text,
                TextCallInput(
                    function_name=self.fn.name,
                    workflow_id=self.inp.batch_id,
                    account_id=self.inp.account_id,
                    item_id=item,
                    model=model,
                    slot_wait_s=SLOT_WAIT_S,
                ),
                start_to_close_timeout=GENERATE_TIMEOUT,
                heartbeat_timeout=GENERATE_HEARTBEAT,
                retry_policy=GENERATE_RETRY,
                summary=f"{self.fn.name} for {self.fn.item_kind} {item}",
            )
        except ActivityError as err:
            return Failed(message(err))
        if out.status == "deferred":
            return Deferred()
        if out.status != "done":
            return Failed(out.error or "failed")
        charge = Charge(
            item_id=item,
            credits=out.credits,
            cost_usd=out.cost_usd,
            tokens_input=out.tokens_input,
            tokens_output=out.tokens_output,
        )
        return Produced(charge, call_s=None if out.reused else out.provider_s)

    def delivered(self, item_id: int, result: dict[str, object] | None) -> None:
        """A batch's items go nowhere next."""

    async def withdraw(self, item_id: int, error: str) -> None:
        await workflow.execute_activity_method(
            TextActivities.withdraw_text,
            WithdrawTextInput(
                function_name=self.fn.name,
                workflow_id=self.inp.batch_id,
                item_id=item_id,
                error=error,
                account_id=self.inp.account_id,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Withdraw {self.fn.item_kind} {item_id} (not charged)",
        )

    async def _record(self, outcome: str) -> None:
        """A text batch has no row of its own: its task log and notification record it."""
