"""ImageBatchWorkflow: plan → reserve → generate in parallel → charge each image → release,
log and notify. Durable: a worker crash, a retry or a replay never charges twice, since
every charge carries the key `<batch_id>:image:<image_id>`.

Concurrency: at most the model's `max_concurrency` provider calls, one per lane; while
calls are slow a second image waits queued in each lane (activities.lanes), so the next
call starts as the last one lands rather than a workflow round trip later. Pause and
cancel stop the lanes: queued images go back to pending without calling the provider.

Controls: signals pause / resume / cancel, queries progress / credits. A cancel from the
Temporal UI or CLI behaves like the cancel signal. History stays bounded: the workflow
drains in-flight images and continues as new, carrying its state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.common import Frozen
    from activities.images import (
        FinishBatchInput,
        GenerateImageInput,
        GenerateImageOutput,
        ImageActivities,
        ImageSlot,
        LanesInput,
        MarkFailedInput,
        MarkFailedOutput,
        PlanInput,
        PlanOutput,
    )
    from activities.ledger import (
        AccountRef,
        DeductInput,
        DeductManyInput,
        DeductManyOutput,
        DeductOutcome,
        HoldRef,
        LedgerActivities,
        ReserveInput,
    )
    from activities.logging import (
        CloseTaskLogInput,
        LoggingActivities,
        NotifyInput,
        OpenTaskLogInput,
    )

T = TypeVar("T")
FUNCTION_NAME = "generate_images"
OPERATION_TYPE = "image_generation"
MAX_ERRORS_KEPT = 5
# History bound: claims stop at `history_limit` events; then at most 2×C images drain,
# each adding at most 12 events (two activities, two workflow tasks): 4000 + 24×200 < 10,240.
MAX_CONCURRENCY = 200
EVENTS_PER_IMAGE_MAX = 12
# Generations per provider lane: one calling the provider, one queued behind it on the
# lane's lock (activities.lanes), so provider calls stay at most C while the next call
# never waits for a workflow round trip (~0.1 s under load). In flight stays under 2×C.
LANE_DEPTH = 2
# Queueing pays only while provider calls are slow next to that round trip; with a fast
# provider the queued activities just crowd the workers (measured: zero-latency throughput
# halves). So lanes are deep while the calls' moving average is at least this long.
DEEP_LANES_MIN_CALL_S = 0.25
CALL_AVERAGE_WEIGHT = 0.2

DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=30,
    non_retryable_error_types=["InsufficientCredits", "IdempotencyConflict", "ModelUnavailable"],
)
GENERATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
)
DB_TIMEOUT = timedelta(seconds=15)
# A queued image first waits out the call ahead of it in its lane (the provider call and
# its download, each up to the provider timeout), then makes its own; a dead worker is
# still noticed within the heartbeat timeout.
GENERATE_TIMEOUT = timedelta(seconds=600)
GENERATE_HEARTBEAT = timedelta(seconds=10)
# While paused, the hold is kept alive (the ledger's TTL would otherwise release it).
HOLD_KEEPALIVE = timedelta(minutes=15)


class ControlInput(Frozen):
    """Input of pause / resume / cancel."""

    reason: str | None = None


class ProgressRequest(Frozen):
    pass


class Charge(Frozen):
    image_id: int
    cost_usd: Decimal


class BatchState(BaseModel):
    """Everything the batch knows; carried across continue-as-new."""

    task_log_id: int
    plan: PlanOutput | None = None
    hold_id: int | None = None
    credits_reserved: int = 0
    pending: list[ImageSlot] = Field(default_factory=list)
    uncharged: list[Charge] = Field(default_factory=list)
    images_total: int = 0
    images_done: int = 0
    images_failed: int = 0
    credits_used: int = 0
    cost_usd: Decimal = Decimal("0")
    balance: int | None = None
    errors: list[str] = Field(default_factory=list)
    paused: bool = False
    pause_reason: str | None = None
    pauses: int = 0
    cancel_requested: bool = False
    runs: int = 1
    call_s: float | None = None  # moving average of provider call seconds (lane depth)
    lanes_stopped: bool = False  # the workers know the batch is paused or cancelled


class ImageBatchInput(Frozen):
    batch_id: str
    account_id: int
    task_ids: list[int]
    model: str | None = None
    max_in_article_images: int | None = None
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


def _cause(err: BaseException) -> BaseException:
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return err


def _message(err: BaseException) -> str:
    """The user-facing message of an activity failure, without the error-type prefix."""
    cause = _cause(err)
    return getattr(cause, "message", None) or str(cause)


@workflow.defn
class ImageBatchWorkflow:
    def __init__(self) -> None:
        self._inp: ImageBatchInput | None = None
        self._s: BatchState | None = None
        self._status = "running"
        # The outcome is decided before the finishing activities run; `status` only shows
        # it once they are done, so a caller that sees "completed" sees the log closed,
        # the notification sent and the batch recorded.
        self._outcome: str | None = None
        self._in_flight = 0
        self._generating = 0
        # Generations per provider lane: one at the provider, one queued behind it.
        self._lane_load: list[int] = []
        self._early_controls: list[str] = []
        self._temporal_cancel = False
        self._charge_queue: list[tuple[Charge, asyncio.Future[DeductOutcome]]] = []
        self._charger_running = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- controls ----------------------------------------------------------------
    @workflow.signal
    def pause(self, inp: ControlInput) -> None:
        if self._s is None:
            self._early_controls.append("pause")
            return
        if not self._s.cancel_requested:
            self._s.paused = True
            self._s.pause_reason = inp.reason or "user"

    @workflow.signal
    def resume(self, inp: ControlInput) -> None:
        if self._s is None:
            self._early_controls.append("resume")
            return
        self._s.paused = False
        self._s.pause_reason = None

    @workflow.signal
    def cancel(self, inp: ControlInput) -> None:
        if self._s is None:
            self._early_controls.append("cancel")
            return
        self._s.cancel_requested = True
        self._s.paused = False

    @workflow.query
    def progress(self, _: ProgressRequest | None = None) -> BatchProgress:
        return self._progress()

    @workflow.query
    def credits(self, _: ProgressRequest | None = None) -> CreditsView:
        s = self._s
        return CreditsView(
            balance=s.balance if s else None,
            credits_reserved=self._reserved_left(),
            credits_used=s.credits_used if s else 0,
            cost_usd=s.cost_usd if s else Decimal("0"),
        )

    # ---- run ---------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: ImageBatchInput) -> BatchProgress:
        self._inp = inp
        self._s = inp.state
        try:
            if self._s is None and not await self._shielded(self._start()):
                return self._progress()
            self._apply_early_controls()
            if self._temporal_cancel:
                self._request_cancel()
            await self._loop()
        except asyncio.CancelledError:
            # A cancel from the Temporal UI/CLI: stop claiming, let in-flight finish.
            self._temporal_cancel = True
            self._request_cancel()
            if self._s is not None:
                await self._shielded(self._sync_lanes())
            await workflow.wait_condition(lambda: self._in_flight == 0)
        if self._should_roll():
            self._continue_as_new()
        result = await self._shielded(self._finish())
        if self._temporal_cancel:
            raise asyncio.CancelledError("image batch cancelled")
        return result

    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Bookkeeping (open, plan, reserve; release, log, notify) runs to its end even if
        Temporal cancels the workflow meanwhile; the cancel is honoured right after, so a
        cancel never leaves a hold locked or a log open."""
        task = asyncio.ensure_future(coro)
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                self._temporal_cancel = True

    def _request_cancel(self) -> None:
        if self._s is not None:
            self._s.cancel_requested = True
            self._s.paused = False

    async def _start(self) -> bool:
        inp = self._require_inp()
        log = await workflow.execute_activity_method(
            LoggingActivities.open_task_log,
            OpenTaskLogInput(
                account_id=inp.account_id,
                function_name=FUNCTION_NAME,
                idempotency_key=f"{inp.batch_id}:task-log",
                workflow_id=inp.batch_id,
                model_name=inp.model,
                payload={
                    "task_ids": inp.task_ids,
                    "model": inp.model,
                    "max_in_article_images": inp.max_in_article_images,
                },
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="Open the AI task log",
        )
        self._s = BatchState(task_log_id=log.task_log_id)
        try:
            plan = await self._plan(inp)
        except ActivityError as err:
            await self._fail(_message(err), {})
            return False
        s = self._s
        # The slots live on in `pending` only: continue-as-new carries them once.
        s.pending, s.images_total = list(plan.slots), len(plan.slots)
        s.plan = plan.model_copy(update={"slots": []})
        required = len(plan.slots) * plan.credits_per_image
        if required > 0:
            hold = await workflow.execute_activity_method(
                LedgerActivities.reserve_credits,
                ReserveInput(
                    account_id=inp.account_id,
                    amount=required,
                    idempotency_key=f"{inp.batch_id}:hold",
                    operation_type=OPERATION_TYPE,
                    workflow_id=inp.batch_id,
                ),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary=f"Reserve {required} credits",
            )
            if not hold.ok:
                details = {"required": hold.required, "available": hold.available}
                await self._fail(hold.message, details)
                return False
            s.hold_id, s.credits_reserved, s.balance = hold.hold_id, hold.amount, hold.balance
        return True

    async def _plan(self, inp: ImageBatchInput) -> PlanOutput:
        return await workflow.execute_activity_method(
            ImageActivities.plan_image_batch,
            PlanInput(
                batch_id=inp.batch_id,
                account_id=inp.account_id,
                task_ids=inp.task_ids,
                task_log_id=self._require_state().task_log_id,
                model=inp.model,
                max_in_article_images=inp.max_in_article_images,
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=DB_RETRY,
            summary=f"Plan images for {len(inp.task_ids)} tasks",
        )

    def _apply_early_controls(self) -> None:
        controls = {"pause": self.pause, "resume": self.resume, "cancel": self.cancel}
        for name in self._early_controls:
            controls[name](ControlInput(reason="user"))
        self._early_controls.clear()

    # ---- the loop ------------------------------------------------------------------
    async def _loop(self) -> None:
        s = self._require_state()
        while True:
            try:
                await workflow.wait_condition(
                    lambda: (
                        self._can_claim()
                        or self._drained()
                        or self._ready_to_roll()
                        or self._lanes_out_of_step()
                    ),
                    timeout=HOLD_KEEPALIVE if s.paused and s.hold_id else None,
                )
            except TimeoutError:
                await self._keep_hold()
                continue
            if self._drained() or self._ready_to_roll():
                return
            if self._lanes_out_of_step():
                await self._sync_lanes()
                continue
            if s.uncharged:
                charge = s.uncharged.pop(0)
                self._spawn(self._charge(charge), charge.image_id)
            else:
                slot = s.pending.pop(0)
                self._spawn(self._process(slot), slot.image_id)

    def _lanes_should_stop(self) -> bool:
        s = self._require_state()
        return s.paused or s.cancel_requested

    def _lanes_out_of_step(self) -> bool:
        return self._lanes_should_stop() != self._require_state().lanes_stopped

    async def _sync_lanes(self) -> None:
        """Tell the workers the batch paused, resumed or was cancelled: an image still
        waiting for its lane then goes back to pending instead of calling the provider."""
        s, inp = self._require_state(), self._require_inp()
        while self._lanes_out_of_step():
            stopped = self._lanes_should_stop()
            await workflow.execute_activity_method(
                ImageActivities.set_batch_lanes,
                LanesInput(batch_id=inp.batch_id, stopped=stopped),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary="Stop the provider lanes" if stopped else "Restart the provider lanes",
            )
            s.lanes_stopped = stopped

    async def _keep_hold(self) -> None:
        """A long pause keeps its credits: push the hold's expiry out again."""
        s = self._require_state()
        if s.hold_id is None:
            return
        out = await workflow.execute_activity_method(
            LedgerActivities.extend_hold,
            HoldRef(hold_id=s.hold_id),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="Keep the credit hold alive while paused",
        )
        if not out.open:  # released meanwhile: later charges come from available credits
            s.hold_id, s.credits_reserved = None, s.credits_used

    def _spawn(self, coro: Coroutine[Any, Any, None], image_id: int) -> None:
        self._in_flight += 1

        async def tracked() -> None:
            try:
                await coro
            except Exception as err:  # an exhausted retry or a bug must not vanish silently
                self._record_failure(image_id, f"{type(err).__name__}: {_message(err)}")
            finally:
                self._in_flight -= 1
                self._publish_details()

        task = asyncio.create_task(tracked())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _concurrency(self) -> int:
        s = self._require_state()
        return max(1, min(MAX_CONCURRENCY, s.plan.max_concurrency if s.plan else 1))

    def _history_full(self) -> bool:
        info = workflow.info()
        limit = self._require_inp().history_limit
        return info.get_current_history_length() > limit or info.is_continue_as_new_suggested()

    def _can_claim(self) -> bool:
        s = self._require_state()
        return (
            not s.paused
            and not s.cancel_requested
            and bool(s.pending or s.uncharged)
            and self._generating < self._lane_depth() * self._concurrency()
            and self._in_flight < 2 * self._concurrency()
            and not self._history_full()
        )

    def _drained(self) -> bool:
        s = self._require_state()
        nothing_left = not s.pending and not s.uncharged
        return self._in_flight == 0 and (s.cancel_requested or nothing_left)

    def _should_roll(self) -> bool:
        s = self._s
        return bool(
            s and not s.cancel_requested and (s.pending or s.uncharged) and self._history_full()
        )

    def _ready_to_roll(self) -> bool:
        return self._in_flight == 0 and self._should_roll()

    def _continue_as_new(self) -> None:
        s = self._require_state()
        s.runs += 1
        inp = self._require_inp()
        workflow.continue_as_new(inp.model_copy(update={"state": s}))

    # ---- one image -------------------------------------------------------------------
    def _lane_depth(self) -> int:
        """Deep lanes until calls prove fast: real image models take seconds."""
        call_s = self._require_state().call_s
        slow = call_s is None or call_s >= DEEP_LANES_MIN_CALL_S
        return LANE_DEPTH if slow else 1

    def _record_call(self, gen: GenerateImageOutput) -> None:
        s = self._require_state()
        if gen.status != "generated" or gen.reused:
            return
        if s.call_s is None:
            s.call_s = gen.provider_s
        else:
            s.call_s += CALL_AVERAGE_WEIGHT * (gen.provider_s - s.call_s)

    async def _process(self, slot: ImageSlot) -> None:
        gen = await self._generate(slot)
        self._record_call(gen)
        if gen.status == "deferred":  # paused or cancelled before it reached the provider
            self._require_state().pending.insert(0, slot)
            return
        if gen.status == "generated":
            await self._charge(Charge(image_id=slot.image_id, cost_usd=gen.cost_usd))
        else:
            self._record_failure(slot.image_id, gen.error or "failed")

    async def _generate(self, slot: ImageSlot) -> GenerateImageOutput:
        """Generate one image in the least busy lane; the bound counts only this work."""
        lane = self._pick_lane()
        self._generating += 1
        self._lane_load[lane] += 1
        try:
            return await self._generate_once(slot, lane)
        finally:
            self._generating -= 1
            self._lane_load[lane] -= 1

    def _pick_lane(self) -> int:
        width = self._concurrency()
        if len(self._lane_load) != width:  # the plan's concurrency is fixed for a batch
            assert self._generating == 0, "lanes resized with generations in flight"
            self._lane_load = [0] * width
        return min(range(width), key=self._lane_load.__getitem__)

    async def _generate_once(self, slot: ImageSlot, lane: int) -> GenerateImageOutput:
        inp, s = self._require_inp(), self._require_state()
        plan = s.plan
        assert plan is not None
        try:
            return await workflow.execute_activity_method(
                ImageActivities.generate_image,
                GenerateImageInput(
                    batch_id=inp.batch_id,
                    account_id=inp.account_id,
                    image_id=slot.image_id,
                    model_name=plan.model_name,
                    provider=plan.provider,
                    prompt=slot.prompt,
                    cost_per_image=plan.cost_per_image,
                    credits_per_image=plan.credits_per_image,
                    lane=lane,
                ),
                start_to_close_timeout=GENERATE_TIMEOUT,
                heartbeat_timeout=GENERATE_HEARTBEAT,
                retry_policy=GENERATE_RETRY,
                summary=f"Generate {slot.image_type} image {slot.image_id} (task {slot.task_id})",
            )
        except ActivityError as err:
            message = _message(err)
            marked = await self._mark_failed(slot.image_id, message, withdraw=False)
            if marked.stored:  # an attempt stored it before failing: it is delivered, so charged
                return GenerateImageOutput(
                    image_id=slot.image_id,
                    status="generated",
                    cost_usd=marked.cost_usd,
                    reused=True,
                )
            return GenerateImageOutput(image_id=slot.image_id, status="failed", error=message)

    async def _mark_failed(self, image_id: int, error: str, withdraw: bool) -> MarkFailedOutput:
        return await workflow.execute_activity_method(
            ImageActivities.mark_image_failed,
            MarkFailedInput(image_id=image_id, error=error, withdraw=withdraw),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Mark image {image_id} failed (not charged)",
        )

    async def _charge(self, charge: Charge, final: bool = False) -> None:
        """Deduct one image's credits against the hold; the key makes it exactly once.
        An image that cannot be charged is paused on (credits) or withdrawn: never free."""
        s = self._require_state()
        plan = s.plan
        assert plan is not None
        if plan.credits_per_image == 0:  # a free model: nothing to deduct
            self._count_done(charge, s.balance)
            return
        try:
            outcome = await self._charge_batched(charge)
        except (ActivityError, ApplicationError) as err:  # retries exhausted
            outcome = DeductOutcome(error_type="ChargeFailed", message=_message(err))
        if outcome.result is not None:
            self._count_done(charge, outcome.result.balance_after, outcome.result.amount)
            return
        message = outcome.message
        if outcome.error_type == "InsufficientCredits" and not final:
            s.uncharged.append(charge)
            await self._pause_for("insufficient_credits", message)
            return
        error = f"not charged, withdrawn: {message}"
        await self._mark_failed(charge.image_id, error, withdraw=True)
        self._record_failure(charge.image_id, error)

    async def _charge_batched(self, charge: Charge) -> DeductOutcome:
        """Queue the charge; one charger deducts everything that landed in the same workflow
        task with one local activity (one account lock), so the next images' generations
        are not held back behind a line of single deductions."""
        future: asyncio.Future[DeductOutcome] = asyncio.get_running_loop().create_future()
        self._charge_queue.append((charge, future))
        if not self._charger_running:
            self._charger_running = True
            task = asyncio.create_task(self._run_charger())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _run_charger(self) -> None:
        try:
            while self._charge_queue:
                batch, self._charge_queue = self._charge_queue, []
                try:
                    out = await self._deduct_many([charge for charge, _ in batch])
                except BaseException as err:
                    for _, future in batch:
                        future.set_exception(err)
                    continue
                for (_, future), outcome in zip(batch, out.outcomes, strict=True):
                    future.set_result(outcome)
        finally:
            self._charger_running = False

    async def _deduct_many(self, charges: list[Charge]) -> DeductManyOutput:
        inp, s = self._require_inp(), self._require_state()
        plan = s.plan
        assert plan is not None
        items = [
            DeductInput(
                account_id=inp.account_id,
                amount=plan.credits_per_image,
                idempotency_key=f"{inp.batch_id}:image:{c.image_id}",
                operation_type=OPERATION_TYPE,
                hold_id=s.hold_id,
                cost_usd=c.cost_usd,
                billed_usd=plan.billed_usd_per_image,
                model_name=plan.model_name,
                related_object_type="image",
                related_object_id=c.image_id,
                ai_task_log_id=s.task_log_id,
                description=f"Image {c.image_id} with {plan.model_name}",
            )
            for c in charges
        ]
        ids = ", ".join(str(c.image_id) for c in charges)
        # A local activity: a few ms of idempotent ledger work needs no task-queue round
        # trip; it is retried like any activity, and a re-run after a crash is a replay.
        return await workflow.execute_local_activity_method(
            LedgerActivities.deduct_credits_many,
            DeductManyInput(account_id=inp.account_id, items=items),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Charge {plan.credits_per_image} credits each for images {ids}",
        )

    def _count_done(self, charge: Charge, balance: int | None, credits: int = 0) -> None:
        s = self._require_state()
        s.images_done += 1
        s.credits_used += credits
        s.cost_usd += charge.cost_usd
        s.balance = balance

    def _record_failure(self, image_id: int, error: str) -> None:
        s = self._require_state()
        s.images_failed += 1
        s.errors = [*s.errors, f"image {image_id}: {error}"][-MAX_ERRORS_KEPT:]

    async def _pause_for(self, reason: str, message: str) -> None:
        s, inp = self._require_state(), self._require_inp()
        if s.paused or s.cancel_requested:  # a cancelling batch settles; it never re-pauses
            return
        s.paused, s.pause_reason, s.pauses = True, reason, s.pauses + 1
        await self._notify(
            "ai_image_paused",
            "Image batch paused",
            f"Image batch paused: {message}. Top up and resume to go on.",
            f"{inp.batch_id}:paused:{s.pauses}",
            {"pause_reason": reason},
            severity="warning",
        )

    # ---- the end -----------------------------------------------------------------------
    async def _finish(self) -> BatchProgress:
        s = self._require_state()
        while s.uncharged:  # generated while credits ran short: charge now, or withdraw
            await self._charge(s.uncharged.pop(0), final=True)
        if s.hold_id is not None:
            released = await workflow.execute_activity_method(
                LedgerActivities.release_hold,
                HoldRef(hold_id=s.hold_id),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary="Release unused credits",
            )
            s.balance = released.balance
        else:
            s.balance = await self._balance()
        s.credits_reserved = s.credits_used
        if s.cancel_requested:
            self._outcome = "cancelled"
        elif s.images_done == 0 and s.images_failed > 0:
            self._outcome = "failed"
        else:
            self._outcome = "completed"
        await asyncio.gather(self._close_log(), self._final_notification(), self._record_batch())
        self._status = self._outcome
        self._publish_details()
        return self._progress()

    async def _close_log(self) -> None:
        s = self._require_state()
        log_status = {"completed": "success", "cancelled": "cancelled", "failed": "error"}
        await workflow.execute_activity_method(
            LoggingActivities.close_task_log,
            CloseTaskLogInput(
                task_log_id=s.task_log_id,
                status=log_status[self._final()],
                cost=s.cost_usd,
                credits_used=s.credits_used,
                result=self._summary_dict(),
                error="; ".join(s.errors) if self._final() == "failed" else None,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Close the AI task log ({self._final()})",
        )

    async def _final_notification(self) -> None:
        s, inp = self._require_state(), self._require_inp()
        failed = f", {s.images_failed} failed" if s.images_failed else ""
        money = f"{s.credits_used} credits (${s.cost_usd:.4f} provider cost)"
        if self._final() == "completed":
            kind, title = "ai_image_success", "Images generated"
            message = f"Generated {s.images_done} images using {money}{failed}"
        elif self._final() == "cancelled":
            kind, title = "ai_image_cancelled", "Image batch cancelled"
            message = f"Cancelled after {s.images_done} images using {money}{failed}"
        else:
            kind, title = "ai_image_failed", "Image generation failed"
            message = (
                f"Image generation failed: {s.images_failed} images failed ({'; '.join(s.errors)})"
            )
        await self._notify(kind, title, message, f"{inp.batch_id}:done", self._summary_dict())

    async def _fail(self, message: str, details: dict[str, int]) -> None:
        """End before any generation: log error, notify, record; nothing was charged."""
        s, inp = self._require_state(), self._require_inp()
        self._outcome = "failed"
        s.errors = [message]
        await workflow.execute_activity_method(
            LoggingActivities.close_task_log,
            CloseTaskLogInput(
                task_log_id=s.task_log_id, status="error", error=message, result=dict(details)
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="Close the AI task log (error)",
        )
        await self._notify(
            "ai_image_failed",
            "Image generation failed",
            message,
            f"{inp.batch_id}:done",
            dict(details),
            severity="error",
        )
        await self._record_batch()
        self._status = "failed"

    async def _notify(
        self,
        kind: str,
        title: str,
        message: str,
        key: str,
        details: dict[str, object],
        severity: str | None = None,
    ) -> None:
        s, inp = self._require_state(), self._require_inp()
        await workflow.execute_activity_method(
            LoggingActivities.notify,
            NotifyInput(
                account_id=inp.account_id,
                notification_type=kind,
                title=title,
                message=message,
                idempotency_key=key,
                severity=severity or ("info" if kind.endswith("success") else "warning"),
                details={**details, "batch_id": inp.batch_id},
                ai_task_log_id=s.task_log_id,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Notify {kind}",
        )

    async def _record_batch(self) -> None:
        s, inp = self._require_state(), self._require_inp()
        await workflow.execute_activity_method(
            ImageActivities.finish_image_batch,
            FinishBatchInput(
                batch_id=inp.batch_id,
                status=self._final(),
                images_total=s.images_total,
                images_done=s.images_done,
                images_failed=s.images_failed,
                credits_used=s.credits_used,
                cost_usd=s.cost_usd,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Record the batch as {self._final()}",
        )

    async def _balance(self) -> int:
        bal = await workflow.execute_activity_method(
            LedgerActivities.get_balance,
            AccountRef(account_id=self._require_inp().account_id),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="Read the balance",
        )
        return bal.credits

    # ---- views -------------------------------------------------------------------------
    def _reserved_left(self) -> int:
        s = self._s
        if s is None or self._status != "running":
            return 0
        return max(0, s.credits_reserved - s.credits_used)

    def _final(self) -> str:
        """The decided outcome while finishing, else the status."""
        return self._outcome or self._status

    def _current_status(self) -> str:
        s = self._s
        if self._status != "running" or s is None:
            return self._status
        if s.cancel_requested:
            return "cancelling"
        return "paused" if s.paused else "running"

    def _progress(self) -> BatchProgress:
        s = self._s
        inp = self._inp
        status = self._current_status()
        return BatchProgress(
            batch_id=inp.batch_id if inp else "",
            status=status,
            pause_reason=s.pause_reason if s and status == "paused" else None,
            images_total=s.images_total if s else 0,
            images_done=s.images_done if s else 0,
            images_failed=s.images_failed if s else 0,
            images_in_flight=self._in_flight,
            credits_reserved=self._reserved_left(),
            credits_used=s.credits_used if s else 0,
            cost_usd=s.cost_usd if s else Decimal("0"),
            balance=s.balance if s else None,
            errors=list(s.errors) if s else [],
        )

    def _summary_dict(self) -> dict[str, object]:
        p = self._progress()
        return {
            "images_total": p.images_total,
            "images_done": p.images_done,
            "images_failed": p.images_failed,
            "credits_used": p.credits_used,
            "cost_usd": str(p.cost_usd),
            "balance": p.balance,
            "status": self._final(),
        }

    def _publish_details(self) -> None:
        """The Temporal UI's "current details"; built from state (called per image)."""
        s = self._s
        if s is None:
            return
        workflow.set_current_details(
            f"**{self._current_status()}** · images {s.images_done}/{s.images_total} done, "
            f"{s.images_failed} failed, {self._in_flight} in flight · "
            f"credits used {s.credits_used} · ${s.cost_usd:.4f} · balance {s.balance}"
        )

    def _require_inp(self) -> ImageBatchInput:
        assert self._inp is not None
        return self._inp

    def _require_state(self) -> BatchState:
        assert self._s is not None
        return self._s
