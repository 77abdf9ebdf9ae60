"""Every activity mocked by name, over one in-memory world: fast workflow tests in the
time-skipping server, and the recorder of replay histories (tests/histories/record.py).

The world keeps an exact little ledger (balance, holds, one charge per key), so the
workflow rules (claims, pause, cancel, charge order, credits running out) are checked
without a database, a provider or a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.automation import (
    CreateTasksInput,
    CreateTasksOutput,
    FinalizeInput,
    FinalizeOutput,
    RecordRunInput,
    RunPlan,
    RunPlanInput,
)
from activities.images import (
    FinishBatchInput,
    GenerateImageInput,
    GenerateImageOutput,
    GenerateImagesInput,
    GenerateImagesOutput,
    ImageSlot,
    MarkFailedInput,
    MarkFailedOutput,
    PlanInput,
    PlanOutput,
)
from activities.ledger import (
    AccountRef,
    BalanceOutput,
    DeductManyInput,
    DeductManyOutput,
    DeductOutcome,
    DeductOutput,
    ExpireHoldsInput,
    ExpireHoldsOutput,
    ExtendHoldOutput,
    HoldRef,
    ReleaseOutput,
    ReserveInput,
    ReserveOutput,
)
from activities.logging import (
    CloseTaskLogInput,
    NotifyInput,
    NotifyOutput,
    OpenTaskLogInput,
    TaskLogRef,
)
from activities.publishing import (
    Agenda,
    AgendaInput,
    ContentRef,
    ImageRef,
    LaneOutcome,
    PublishDueInput,
    Published,
    PublishFailure,
    PublishJob,
    PublishLaneInput,
    PublishOutcome,
)
from activities.runs import RunStopInput
from activities.text import (
    TextCallInput,
    TextCallOutput,
    TextModel,
    TextPlanInput,
    TextPlanOutput,
    WithdrawTextInput,
)

TEXT_MODEL = TextModel(
    model_name="fake-text",
    provider="openai",
    max_concurrency=3,
    tokens_per_credit=100,
    cost_per_1k_input=Decimal("0.001"),
    cost_per_1k_output=Decimal("0.002"),
)


@dataclass
class Hold:
    amount: int
    consumed: int = 0
    open: bool = True


@dataclass
class World:
    """What the fake activities read and write; tests steer it and then look at it."""

    balance: int = 1000
    credits_per_image: int = 2
    images_per_task: int = 2
    max_concurrency: int = 3
    credits_per_text: int = 3
    fail_plan: str | None = None
    failing_items: set[int] = field(default_factory=set)  # generation fails for good
    gate: asyncio.Event | None = None  # when set up, generations wait for it
    # when set up, a refused credit check (reserve or charge) is decided at once but
    # answered only once it is set: the refusal reaches the workflow late
    refusal_gate: asyncio.Event | None = None
    refusals_held: int = 0
    image_gate: asyncio.Event | None = None  # when set up, image generations wait for it
    holds: dict[int, Hold] = field(default_factory=dict)
    charges: list[str] = field(default_factory=list)  # keys, in charge order
    charged: dict[str, int] = field(default_factory=dict)
    logs: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # key → notification type
    stopped: set[str] = field(default_factory=set)
    withdrawn: list[int] = field(default_factory=list)
    recorded: dict[str, str] = field(default_factory=dict)  # batch id → final status
    events: list[tuple[str, int]] = field(default_factory=list)  # generated / charged
    # automation runs: the site's keywords, what each stage made, the run rows
    keywords: int = 0
    keywords_per_call: int = 20
    ideas_per_cluster: int = 2
    function_gates: dict[str, asyncio.Event] = field(default_factory=dict)
    item_gates: dict[tuple[str, int], asyncio.Event] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)  # calls held at a gate, by function
    made: dict[str, list[int]] = field(default_factory=dict)  # function → item ids done
    tasks_of_ideas: dict[int, int] = field(default_factory=dict)
    run_rows: dict[str, RecordRunInput] = field(default_factory=dict)
    finalized: list[int] = field(default_factory=list)
    next_id: int = 1000
    # publishing: content ids due now, and what the fake WordPress received
    publish_due: list[int] = field(default_factory=list)
    posts: dict[int, int] = field(default_factory=dict)  # content → post id
    publish_gate: asyncio.Event | None = None  # when set up, whole articles wait for it
    uploads: dict[int, int] = field(default_factory=dict)  # image → media id
    publish_failing: set[int] = field(default_factory=set)  # content whose post fails
    published: list[int] = field(default_factory=list)
    publish_failed: list[int] = field(default_factory=list)
    publish_steps: list[tuple[int, str]] = field(default_factory=list)  # (content, step)
    publishing_now: int = 0
    publishing_peak: int = 0
    active: int = 0
    peak: int = 0
    started: int = 0
    # image lanes: how long the fake provider says a call took, the lanes sent (their image
    # ids), images the provider refuses for now inside a lane, and lanes that fail whole
    provider_s: float = 1.0
    lanes: list[list[int]] = field(default_factory=list)
    refused_in_lane: set[int] = field(default_factory=set)
    failing_lanes: int = 0
    rechecked: list[int] = field(default_factory=list)  # images sent alone with recheck

    @property
    def available(self) -> int:
        return self.balance - sum(h.amount - h.consumed for h in self.holds.values() if h.open)

    def note_types(self) -> list[str]:
        return list(self.notes.values())

    # ---- logs and notifications ----------------------------------------------------
    @activity.defn(name="open_task_log")
    async def open_task_log(self, inp: OpenTaskLogInput) -> TaskLogRef:
        for log_id, log in self.logs.items():
            if log["key"] == inp.idempotency_key:
                return TaskLogRef(task_log_id=log_id)
        log_id = len(self.logs) + 1
        self.logs[log_id] = {"key": inp.idempotency_key, "function": inp.function_name}
        return TaskLogRef(task_log_id=log_id)

    @activity.defn(name="close_task_log")
    async def close_task_log(self, inp: CloseTaskLogInput) -> None:
        self.logs[inp.task_log_id].update(status=inp.status, credits=inp.credits_used)

    @activity.defn(name="notify")
    async def notify(self, inp: NotifyInput) -> NotifyOutput:
        self.notes.setdefault(inp.idempotency_key, inp.notification_type)
        return NotifyOutput(notification_id=len(self.notes))

    # ---- the ledger ------------------------------------------------------------------
    @activity.defn(name="reserve_credits")
    async def reserve_credits(self, inp: ReserveInput) -> ReserveOutput:
        if self.available < inp.amount:
            refused = ReserveOutput(
                ok=False,
                required=inp.amount,
                available=self.available,
                message=f"Insufficient credits. Required: {inp.amount}, Available: {self.available}",
            )
            await self._answer_refusal()
            return refused
        hold_id = len(self.holds) + 1
        self.holds[hold_id] = Hold(inp.amount)
        return ReserveOutput(ok=True, hold_id=hold_id, amount=inp.amount, balance=self.balance)

    @activity.defn(name="deduct_credits_many")
    async def deduct_credits_many(self, inp: DeductManyInput) -> DeductManyOutput:
        outcomes = []
        for item in inp.items:
            if item.idempotency_key in self.charged:
                outcomes.append(self._charged(item.idempotency_key, item.amount))
                continue
            hold = self.holds.get(item.hold_id) if item.hold_id else None
            covered = min(item.amount, hold.amount - hold.consumed) if hold and hold.open else 0
            if self.available + covered < item.amount:
                message = (
                    f"Insufficient credits. Required: {item.amount}, Available: {self.available}"
                )
                outcomes.append(DeductOutcome(error_type="InsufficientCredits", message=message))
                continue
            if hold is not None:
                hold.consumed += covered
            self.balance -= item.amount
            self.charged[item.idempotency_key] = item.amount
            self.charges.append(item.idempotency_key)
            self.events.append(("charged", int(item.idempotency_key.rsplit(":", 1)[1])))
            outcomes.append(self._charged(item.idempotency_key, item.amount))
        if any(o.error_type == "InsufficientCredits" for o in outcomes):
            await self._answer_refusal()
        return DeductManyOutput(outcomes=outcomes)

    async def _answer_refusal(self) -> None:
        if self.refusal_gate is None:
            return
        self.refusals_held += 1
        try:
            await self._held("refusal", self.refusal_gate)
        finally:
            self.refusals_held -= 1

    def _charged(self, key: str, amount: int) -> DeductOutcome:
        result = DeductOutput(
            transaction_id=self.charges.index(key) + 1,
            usage_log_id=self.charges.index(key) + 1,
            amount=amount,
            balance_after=self.balance,
            replayed=False,
        )
        return DeductOutcome(result=result)

    @activity.defn(name="release_hold")
    async def release_hold(self, inp: HoldRef) -> ReleaseOutput:
        hold = self.holds[inp.hold_id]
        released = hold.amount - hold.consumed if hold.open else 0
        hold.open = False
        return ReleaseOutput(
            hold_id=inp.hold_id, released=released, consumed=hold.consumed, balance=self.balance
        )

    @activity.defn(name="extend_hold")
    async def extend_hold(self, inp: HoldRef) -> ExtendHoldOutput:
        return ExtendHoldOutput(open=self.holds[inp.hold_id].open)

    @activity.defn(name="get_balance")
    async def get_balance(self, inp: AccountRef) -> BalanceOutput:
        return BalanceOutput(credits=self.balance, reserved=0, available=self.available)

    @activity.defn(name="expire_holds")
    async def expire_holds(self, inp: ExpireHoldsInput) -> ExpireHoldsOutput:
        return ExpireHoldsOutput(released=0)

    # ---- runs ------------------------------------------------------------------------
    @activity.defn(name="set_run_stopped")
    async def set_run_stopped(self, inp: RunStopInput) -> None:
        (self.stopped.add if inp.stopped else self.stopped.discard)(inp.workflow_id)

    @activity.defn(name="forget_run")
    async def forget_run(self, inp: RunStopInput) -> None:
        self.stopped.discard(inp.workflow_id)

    # ---- images ----------------------------------------------------------------------
    @activity.defn(name="plan_image_batch")
    async def plan_image_batch(self, inp: PlanInput) -> PlanOutput:
        if self.fail_plan:
            raise ApplicationError(self.fail_plan, type="ModelUnavailable", non_retryable=True)
        slots = [
            ImageSlot(
                image_id=task_id * 100 + n,
                task_id=task_id,
                image_type="featured" if n == 0 else "in_article",
                prompt=f"image {n} of task {task_id}",
            )
            for task_id in inp.task_ids
            for n in range(self.images_per_task)
        ]
        return PlanOutput(
            model_name="fake-image",
            provider="openai",
            max_concurrency=self.max_concurrency,
            credits_per_image=self.credits_per_image,
            cost_per_image=Decimal("0.04"),
            billed_usd_per_image=Decimal("0.02"),
            credit_price_usd=Decimal("0.01"),
            slots=slots,
            already_done=0,
            missing_task_ids=[],
            tasks_without_content=[],
        )

    @activity.defn(name="generate_image")
    async def generate_image(self, inp: GenerateImageInput) -> GenerateImageOutput:
        if inp.batch_id in self.stopped:
            return GenerateImageOutput(image_id=inp.image_id, status="deferred")
        if self.image_gate is not None:  # a test holds image generations back
            self.active += 1
            try:
                await self._held("generate_images", self.image_gate)
            finally:
                self.active -= 1
        await self._work()
        if inp.image_id in self.failing_items:
            return GenerateImageOutput(image_id=inp.image_id, status="failed", error="refused")
        if inp.recheck:
            self.rechecked.append(inp.image_id)
        self.events.append(("generated", inp.image_id))
        return GenerateImageOutput(
            image_id=inp.image_id,
            status="generated",
            cost_usd=Decimal("0.04"),
            provider_s=self.provider_s,
        )

    @activity.defn(name="generate_images")
    async def generate_images(self, inp: GenerateImagesInput) -> GenerateImagesOutput:
        self.lanes.append([one.image_id for one in inp.images])
        if self.failing_lanes:
            self.failing_lanes -= 1
            raise ApplicationError("the lane's worker is gone", non_retryable=True)
        outs = []
        for one in inp.images:
            if one.image_id in self.refused_in_lane:
                self.refused_in_lane.discard(one.image_id)  # alone, it goes through
                outs.append(GenerateImageOutput(image_id=one.image_id, status="retry"))
            else:
                outs.append(await self.generate_image(one))
        return GenerateImagesOutput(images=outs)

    async def _work(self) -> None:
        self.started += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.gate is not None:
                await self._held("any", self.gate)
            await asyncio.sleep(0)
        finally:
            self.active -= 1

    async def _held(self, function: str, gate: asyncio.Event) -> None:
        """Wait at a test's gate, heartbeating as a real call does (so a slow test is
        not mistaken for a dead worker)."""
        self.waiting[function] = self.waiting.get(function, 0) + 1
        try:
            while not gate.is_set():
                activity.heartbeat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gate.wait(), 1.0)
        finally:
            self.waiting[function] -= 1

    @activity.defn(name="mark_image_failed")
    async def mark_image_failed(self, inp: MarkFailedInput) -> MarkFailedOutput:
        if inp.withdraw:
            self.withdrawn.append(inp.image_id)
        return MarkFailedOutput(stored=False)

    @activity.defn(name="finish_image_batch")
    async def finish_image_batch(self, inp: FinishBatchInput) -> None:
        self.recorded[inp.batch_id] = inp.status

    # ---- text --------------------------------------------------------------------------
    @activity.defn(name="plan_text_batch")
    async def plan_text_batch(self, inp: TextPlanInput) -> TextPlanOutput:
        if self.fail_plan:
            raise ApplicationError(self.fail_plan, type="ModelUnavailable", non_retryable=True)
        return TextPlanOutput(
            model=TEXT_MODEL,
            credit_price_usd=Decimal("0.01"),
            item_ids=list(inp.item_ids),
            missing_ids=[],
            credits_per_item=self.credits_per_text,
        )

    @activity.defn(name="generate_text")
    async def generate_text(self, inp: TextCallInput) -> TextCallOutput:
        if inp.workflow_id in self.stopped:
            return TextCallOutput(item_id=inp.item_id, status="deferred")
        for gate in (
            self.function_gates.get(inp.function_name),
            self.item_gates.get((inp.function_name, inp.item_id)),
        ):
            if gate is not None:
                await self._held(inp.function_name, gate)
        await self._work()
        if inp.item_id in self.failing_items:
            return TextCallOutput(item_id=inp.item_id, status="failed", error="malformed")
        self.events.append(("generated", inp.item_id))
        self.made.setdefault(inp.function_name, []).append(inp.item_id)
        return TextCallOutput(
            item_id=inp.item_id,
            status="done",
            credits=self.credits_per_text,
            cost_usd=Decimal("0.0012"),
            tokens_input=200,
            tokens_output=100,
            provider_s=1.0,
            result=self._made_by(inp),
        )

    def _made_by(self, inp: TextCallInput) -> dict[str, Any]:
        """What each function's writer would report: new ids for the next stage."""
        if inp.function_name == "auto_cluster":
            return {"cluster_ids": [self._new_id() for _ in range(max(1, len(inp.members) // 5))]}
        if inp.function_name == "generate_ideas":
            return {"idea_ids": [self._new_id() for _ in range(self.ideas_per_cluster)]}
        if inp.function_name == "generate_content":
            return {"content_id": self._new_id()}
        return {"images": self.images_per_task}

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    # ---- automation runs --------------------------------------------------------------
    @activity.defn(name="plan_automation_run")
    async def plan_automation_run(self, inp: RunPlanInput) -> RunPlan:
        if self.fail_plan:
            raise ApplicationError(self.fail_plan, type="ModelUnavailable", non_retryable=True)
        ids = list(range(1, self.keywords + 1))
        size = self.keywords_per_call
        return RunPlan(
            text_model=TEXT_MODEL,
            image_model="fake-image",
            image_credits_per_image=self.credits_per_image,
            images_per_article=self.images_per_task,
            max_in_article_images=self.images_per_task - 1,
            credit_price_usd=Decimal("0.01"),
            estimates={
                "auto_cluster": self.credits_per_text,
                "generate_ideas": self.credits_per_text,
                "generate_content": self.credits_per_text,
                "generate_image_prompts": self.credits_per_text,
            },
            keywords_per_cluster_call=size,
            batch_sizes={
                "auto_cluster": 3,
                "generate_ideas": 3,
                "generate_content": 3,
                "generate_image_prompts": 3,
            },
            image_batch_size=4,
            keyword_batches=[ids[i : i + size] for i in range(0, len(ids), size)],
            clusters=[],
            ideas=[],
            tasks=[],
            prompts=[],
            images=[],
            review=[],
        )

    @activity.defn(name="create_tasks")
    async def create_tasks(self, inp: CreateTasksInput) -> CreateTasksOutput:
        for idea in inp.idea_ids:
            self.tasks_of_ideas.setdefault(idea, self._new_id())
        return CreateTasksOutput(task_ids=[self.tasks_of_ideas[i] for i in inp.idea_ids])

    @activity.defn(name="finalize_content")
    async def finalize_content(self, inp: FinalizeInput) -> FinalizeOutput:
        fresh = [c for c in inp.content_ids if c not in self.finalized]
        self.finalized.extend(fresh)
        return FinalizeOutput(review=len(fresh), approved=0, scheduled=[])

    @activity.defn(name="record_run")
    async def record_run(self, inp: RecordRunInput) -> None:
        self.run_rows[inp.run_id] = inp

    @activity.defn(name="withdraw_text")
    async def withdraw_text(self, inp: WithdrawTextInput) -> None:
        self.withdrawn.append(inp.item_id)

    # ---- publishing ------------------------------------------------------------------
    @activity.defn(name="publishing_agenda")
    async def publishing_agenda(self, inp: AgendaInput) -> Agenda:
        done = {*self.published, *self.publish_failed}  # as the database's statuses say
        return Agenda(due=[c for c in self.publish_due if c not in done], next_at=None)

    @activity.defn(name="start_publish")
    async def start_publish(self, inp: ContentRef) -> PublishJob:
        self.publish_steps.append((inp.content_id, "start"))
        self.publishing_now += 1
        self.publishing_peak = max(self.publishing_peak, self.publishing_now)
        return PublishJob(
            content_id=inp.content_id, ready=True, image_ids=_article_images(inp.content_id)
        )

    @activity.defn(name="upload_image")
    async def upload_image(self, inp: ImageRef) -> int:
        self.publish_steps.append((inp.content_id, "upload"))
        return self.uploads.setdefault(inp.image_id, len(self.uploads) + 1)

    @activity.defn(name="create_post")
    async def create_post(self, inp: ContentRef) -> Published:
        if inp.content_id in self.publish_failing:
            raise ApplicationError(
                "WordPress refused the post", type="forbidden", non_retryable=True
            )
        self.publish_steps.append((inp.content_id, "post"))
        post = self.posts.setdefault(inp.content_id, len(self.posts) + 1)
        return Published(content_id=inp.content_id, post_id=post, url=f"https://wp.test/?p={post}")

    @activity.defn(name="publish_article")
    async def publish_article(self, inp: ContentRef) -> Published:
        for image_id in _article_images(inp.content_id):
            await self.upload_image(ImageRef(content_id=inp.content_id, image_id=image_id))
        return await self.create_post(inp)

    @activity.defn(name="finish_publish")
    async def finish_publish(self, inp: Published) -> None:
        self.publish_steps.append((inp.content_id, "finish"))
        self.publishing_now -= 1
        self.published.append(inp.content_id)

    @activity.defn(name="publish_due")
    async def publish_whole(self, inp: PublishDueInput) -> PublishOutcome:
        await self.start_publish(ContentRef(content_id=inp.content_id))
        if self.publish_gate is not None:  # a test holds articles mid-publish
            await self.publish_gate.wait()
        published = await self.publish_article(ContentRef(content_id=inp.content_id))
        await self.finish_publish(published.model_copy(update={"published_at": inp.now}))
        return PublishOutcome(content_id=inp.content_id, published=published)

    @activity.defn(name="publish_lane")
    async def publish_lane(self, inp: PublishLaneInput) -> LaneOutcome:
        outcomes = []
        for content_id in inp.content_ids:
            try:
                out = await self.publish_whole(PublishDueInput(content_id=content_id, now=inp.now))
            except ApplicationError as err:
                await self.fail_publish(PublishFailure(content_id=content_id, error=str(err)))
                out = PublishOutcome(content_id=content_id, error=str(err))
            outcomes.append(out)
        return LaneOutcome(outcomes=outcomes)

    @activity.defn(name="fail_publish")
    async def fail_publish(self, inp: PublishFailure) -> None:
        self.publishing_now -= 1
        self.publish_failed.append(inp.content_id)

    def activities(self) -> list[Any]:
        return [
            self.open_task_log,
            self.close_task_log,
            self.notify,
            self.reserve_credits,
            self.deduct_credits_many,
            self.release_hold,
            self.extend_hold,
            self.get_balance,
            self.expire_holds,
            self.set_run_stopped,
            self.forget_run,
            self.plan_image_batch,
            self.generate_image,
            self.generate_images,
            self.mark_image_failed,
            self.finish_image_batch,
            self.plan_text_batch,
            self.generate_text,
            self.withdraw_text,
            self.plan_automation_run,
            self.create_tasks,
            self.finalize_content,
            self.record_run,
            self.publishing_agenda,
            self.start_publish,
            self.upload_image,
            self.create_post,
            self.publish_article,
            self.finish_publish,
            self.publish_whole,
            self.publish_lane,
            self.fail_publish,
        ]


def epoch() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


def _article_images(content_id: int) -> list[int]:
    """A fake article's two images (featured, in-article): ids derived from its own."""
    return [content_id * 10, content_id * 10 + 1]
