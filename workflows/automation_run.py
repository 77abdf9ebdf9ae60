"""AutomationRunWorkflow: a site's keywords to reviewed, illustrated, scheduled articles
(DESIGN §2, §4), on the run engine.

Seven stages, overlapping: an item moves on as soon as it is ready (an idea as soon as its
cluster exists, an article as soon as its task does), each stage within its batch size and
the model's provider-wide limit.

    1 clustering  keyword batches  → clusters        (auto_cluster)
    2 ideas       clusters         → ideas           (generate_ideas)
    3 tasks       ideas            → writer tasks    (no AI)
    4 content     tasks            → articles        (generate_content)
    5 prompts     articles         → image prompts   (generate_image_prompts)
    6 images      articles         → images          (child ImageBatchWorkflows)
    7 review      illustrated      → review, or approved and given a publish slot

Every AI call is metered like an image: each text stage has its own task log, holds,
charges and notifications; each child batch its own. Credits are reserved stage by stage
as work is claimed; running out (or past `budget_credits`) pauses the run with that
reason and a notification, and `resume` goes on where it stopped. Children are abandoned
on continue-as-new and report back by signal, so the run's history stays bounded for any
number of keywords while children keep going.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.automation import (
        AutomationActivities,
        ClaimRunInput,
        CreateTasksInput,
        FinalizeInput,
        RecordRunInput,
        RunPlan,
        RunPlanInput,
    )
    from activities.common import Frozen
    from activities.logging import LoggingActivities, NotifyInput
    from activities.publishing import PokeActivities, SiteRef
    from activities.runs import RunActivities, RunStopInput
    from activities.text import TextActivities, TextCallInput, WithdrawTextInput
    from core.temporal import ACCOUNT_ID, RUN_KIND, SITE_ID
    from domain import progress_feed
    from domain.ai_functions import (
        AUTO_CLUSTER,
        GENERATE_CONTENT,
        GENERATE_IDEAS,
        GENERATE_IMAGE_PROMPTS,
        AIFunction,
    )
    from workflows.engine.batch import CHILD_FINISHED, CHILD_PAUSED, ChildReport
    from workflows.engine.control import (
        PATCH_STALE_REFUSAL,
        ControlInput,
        ControlState,
        ProgressRequest,
        RunControl,
    )
    from workflows.engine.items import (
        HISTORY_LIMIT,
        WORKING_SHOWN,
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
    from workflows.image_batch import ImageBatchInput, ImageBatchWorkflow

STAGES = ("clustering", "ideas", "tasks", "content", "image_prompts", "images", "review")
TEXT_STAGES: dict[str, AIFunction] = {
    "clustering": AUTO_CLUSTER,
    "ideas": GENERATE_IDEAS,
    "content": GENERATE_CONTENT,
    "image_prompts": GENERATE_IMAGE_PROMPTS,
}
UPSTREAM = dict(zip(STAGES[1:], STAGES[:-1], strict=True))
TASKS_PER_CALL = 50
REVIEW_PER_CALL = 50
MIN_ACTIVE_CHILDREN = 3
PATCH_EARLY_CHILD = "images-start-without-a-full-group"
PATCH_STALE = "resume-drops-child-pause-reports-from-before-it"
CREDIT_ERROR = "Insufficient credits"


class TextStageState(BaseModel):
    meter: MeterState = Field(default_factory=MeterState)
    loop: LoopState = Field(default_factory=LoopState)
    pending: list[int] = Field(default_factory=list)
    members: dict[str, list[int]] = Field(default_factory=dict)  # keyword batch → keywords
    holds: int = 0  # holds reserved so far (each has its own key)
    opened: bool = False
    done: bool = False


class FlowStageState(BaseModel):
    """A stage without AI calls (tasks, review), or the images stage's article counts."""

    pending: list[int] = Field(default_factory=list)
    total: int = 0
    done: int = 0
    failed: int = 0
    finished: bool = False


class ImagesState(BaseModel):
    pending: list[list[int]] = Field(default_factory=list)  # [content id, task id]
    active: dict[str, list[list[int]]] = Field(default_factory=dict)  # child id → articles
    started: int = 0
    articles: FlowStageState = Field(default_factory=FlowStageState)
    images_done: int = 0
    images_failed: int = 0
    credits_used: int = 0
    cost_usd: Decimal = Decimal("0")
    errors: list[str] = Field(default_factory=list)
    # child id → resume signals sent to it (counted when sent; a failed send is taken back)
    resumes_told: dict[str, int] = Field(default_factory=dict)


class RunState(BaseModel):
    """Carried across continue-as-new: only ever gains fields with defaults."""

    control: ControlState = Field(default_factory=ControlState)
    plan: RunPlan | None = None  # its backlog lists emptied once they are queued
    text: dict[str, TextStageState] = Field(
        default_factory=lambda: {name: TextStageState() for name in TEXT_STAGES}
    )
    tasks: FlowStageState = Field(default_factory=FlowStageState)
    images: ImagesState = Field(default_factory=ImagesState)
    review: FlowStageState = Field(default_factory=FlowStageState)
    task_of: dict[str, int] = Field(default_factory=dict)  # content id → task id
    budget_credits: int | None = None
    balance: int | None = None
    notes: int = 0
    recorded: str = ""  # the last status written to the run's row
    runs: int = 1
    version: int = 0  # how many times the run's progress has changed


class AutomationRunInput(Frozen):
    run_id: str
    account_id: int
    site_id: int
    budget_credits: int | None = None
    history_limit: int = HISTORY_LIMIT
    scheduled: bool = False  # started by the site's schedule: claims the site itself
    state: RunState | None = None


class StageProgress(Frozen):
    name: str
    status: str
    total: int
    done: int
    failed: int
    credits_used: int
    # The first few items being worked on now: keywords (clustering), clusters (ideas),
    # tasks (content), content (image prompts, images); none for the bulk DB stages.
    working_on: list[int] = []


class RunProgress(Frozen):
    run_id: str
    site_id: int
    status: str
    pause_reason: str | None
    current_stage: str | None
    stages: list[StageProgress]
    credits_used: int
    cost_usd: Decimal
    balance: int | None
    budget_credits: int | None
    active_batches: list[str] = []
    # How many times the progress has changed, and when it last did: the workflow time
    # of the task that changed it (None in what the API reads from the run's row).
    version: int | None = None
    updated_at: datetime | None = None


class ProgressChanges(Frozen):
    """When each change of this execution's progress happened: version `first_version`
    at `times[0]`, the next at `times[1]`, and so on (bench/watchers.py dates what its
    watchers saw by these)."""

    first_version: int
    times: list[datetime]


class RunCredits(Frozen):
    balance: int | None
    credits_used: int
    cost_usd: Decimal
    budget_credits: int | None


class TextStageWork:
    """One text stage's items, plugged into the engine's item loop."""

    def __init__(self, run: AutomationRunWorkflow, stage: str) -> None:
        self.run = run
        self.stage = stage
        self.fn = TEXT_STAGES[stage]

    def item_id(self, item: int) -> int:
        return item

    async def process(self, item: int) -> ItemOutcome:
        run, st = self.run, self.run.s.text[self.stage]
        plan = run.s.plan
        assert plan is not None
        try:
            out = await workflow.execute_activity_method(
                TextActivities.generate_text,
                TextCallInput(
                    function_name=self.fn.name,
                    workflow_id=run.run_id,
                    account_id=run.inp.account_id,
                    item_id=item,
                    model=plan.text_model,
                    slot_wait_s=SLOT_WAIT_S,
                    members=st.members.get(str(item), []),
                    # later stages first: the first articles reach the images sooner
                    priority=list(TEXT_STAGES).index(self.stage),
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
        return Produced(charge, call_s=None if out.reused else out.provider_s, result=out.result)

    async def withdraw(self, item_id: int, error: str) -> None:
        st = self.run.s.text[self.stage]
        await workflow.execute_activity_method(
            TextActivities.withdraw_text,
            WithdrawTextInput(
                function_name=self.fn.name,
                workflow_id=self.run.run_id,
                item_id=item_id,
                error=error,
                account_id=self.run.inp.account_id,
                members=st.members.get(str(item_id), []),
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Withdraw {self.fn.item_kind} {item_id} (not charged)",
        )

    def delivered(self, item_id: int, result: dict[str, Any] | None) -> None:
        """What the item made moves to the next stage at once."""
        self.run.route(self.stage, item_id, result or {})


@workflow.defn
class AutomationRunWorkflow:
    @workflow.init
    def __init__(self, inp: AutomationRunInput) -> None:
        self.inp = inp
        # A scheduled run's id is the one Temporal gives it (the schedule's id plus the time).
        self.run_id = inp.run_id or workflow.info().workflow_id
        self.s = inp.state or RunState(budget_credits=inp.budget_credits)
        self._skipped = False
        self.control = RunControl(self.s.control)
        self.stop = StopPublisher(self.control, self._publish_stop)
        self.meters: dict[str, Meter] = {}
        self.loops: dict[str, ItemLoop[int]] = {}
        for stage, fn in TEXT_STAGES.items():
            st = self.s.text[stage]
            self.meters[stage] = Meter(
                fn, inp.account_id, self.run_id, st.meter, f"{self.run_id}:{fn.name}"
            )
            self.loops[stage] = ItemLoop(
                st.pending,
                st.loop,
                self.control,
                self.meters[stage],
                TextStageWork(self, stage),
                self.stop,
                on_pause=self._paused,
                concurrency=self._width(stage),
                history_limit=inp.history_limit,
                more_coming=self._upstream_running(stage),
                before_claim=self._credits_for(stage),
                on_change=self._changed(stage),
            )
        self._untold: dict[str, str] = {}  # child id → a control it could not take yet
        self._told = "resume"  # the last control the children were given
        self._pending_pause: str | None = None  # a child ran out of credits: pause here too
        self._shown: tuple[RunProgress, bool] | None = None  # the progress as last dated
        self._row_finished = False  # the run's row says it has ended
        self._change_times: list[datetime] = []  # when each of its changes happened
        self._dating: asyncio.Task[None] | None = None

    # ---- controls ----------------------------------------------------------------
    @workflow.signal
    def pause(self, inp: ControlInput) -> None:
        self.control.pause(inp.reason or "user")

    @workflow.signal
    def resume(self, inp: ControlInput) -> None:
        if inp.budget_credits is not None:
            self.s.budget_credits = inp.budget_credits
        was_paused = self.s.control.paused
        self.control.resume()
        if was_paused and self._pending_pause is not None and workflow.patched(PATCH_STALE):
            # a child's "out of credits" that came in while the run was paused is answered
            # by this resume (every child is told to resume; one still short says so
            # again): acting on it now would pause a topped-up run at once
            self._pending_pause = None

    @workflow.signal
    def cancel(self, inp: ControlInput) -> None:
        self.control.cancel()

    @workflow.signal(name=CHILD_PAUSED)
    def child_paused(self, report: ChildReport) -> None:
        """A child batch ran out of credits: the run pauses with it."""
        told = self.s.images.resumes_told.get(report.batch_id, 0)
        if report.batch_id in self.s.images.active and not self._stale(report, told):
            self._pending_pause = report.pause_reason or "insufficient_credits"

    @workflow.signal(name=CHILD_FINISHED)
    def child_finished(self, report: ChildReport) -> None:
        articles = self.s.images.active.pop(report.batch_id, None)
        if articles is None:
            return  # not ours, or already counted
        img = self.s.images
        told = img.resumes_told.pop(report.batch_id, 0)
        refused = report.status == "failed" and any(
            e.startswith(CREDIT_ERROR) for e in report.errors
        )
        if refused and not self.s.control.cancel_requested:  # not started: do them later
            img.pending[:0] = articles
            if not self._stale(report, told):
                self._pending_pause = "insufficient_credits"
            return
        img.images_done += report.done
        img.images_failed += report.failed
        img.credits_used += report.credits_used
        img.cost_usd += report.cost_usd
        img.errors = [*img.errors, *report.errors][-5:]
        if report.balance is not None:
            self.s.balance = report.balance
        made = [c for c, _ in articles]
        img.articles.done += len(made)
        if report.status != "cancelled":
            self.s.review.pending.extend(made)
            self.s.review.total += len(made)

    @workflow.query
    def progress(self, _: ProgressRequest | None = None) -> RunProgress:
        return self._progress()

    @workflow.query
    def progress_changes(self, _: ProgressRequest | None = None) -> ProgressChanges:
        first = self.s.version - len(self._change_times) + 1  # this execution's first
        return ProgressChanges(first_version=first, times=self._change_times)

    @workflow.query
    def credits(self, _: ProgressRequest | None = None) -> RunCredits:
        p = self._progress()
        return RunCredits(
            balance=p.balance,
            credits_used=p.credits_used,
            cost_usd=p.cost_usd,
            budget_credits=p.budget_credits,
        )

    # ---- run ---------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: AutomationRunInput) -> RunProgress:
        # adds no command: old histories replay with it, and it ends with the workflow
        self._dating = asyncio.create_task(self._date_changes())
        # A cancel from the Temporal UI/CLI is the cancel signal: the stages are shielded
        # from it, see the run cancelling and wind down as they would for the signal.
        if inp.state is None and not await self.control.shielded(self._start()):
            return self._last_progress()
        finished = await self.control.shielded(self._stages())
        if not finished:
            self.s.runs += 1
            self._date_if_changed()
            self._roll()
        await self.control.shielded(self._finish())
        if self.control.temporal_cancel:
            self._date_if_changed()
            raise asyncio.CancelledError("automation run cancelled")
        return self._last_progress()

    def _last_progress(self) -> RunProgress:
        """The progress the workflow returns, dated: the same as its last announced."""
        self._date_if_changed()
        return self._progress()

    def _roll(self) -> NoReturn:
        workflow.continue_as_new(self.inp.model_copy(update={"state": self.s}))

    async def _start(self) -> bool:
        if self.inp.scheduled and not await self._claim_site():
            return False
        try:
            plan = await workflow.execute_activity_method(
                AutomationActivities.plan_automation_run,
                RunPlanInput(
                    run_id=self.run_id, account_id=self.inp.account_id, site_id=self.inp.site_id
                ),
                start_to_close_timeout=PLAN_TIMEOUT,
                retry_policy=DB_RETRY,
                summary="Plan the run from the site's backlog",
            )
        except ActivityError as err:
            await self._fail(message(err))
            return False
        self._queue_backlog(plan)
        await self._record()
        return True

    async def _claim_site(self) -> bool:
        """A scheduled start claims the site as the API does; with another run active it
        is skipped, and recorded as such."""
        claimed = await workflow.execute_activity_method(
            AutomationActivities.claim_run,
            ClaimRunInput(
                run_id=self.run_id,
                account_id=self.inp.account_id,
                site_id=self.inp.site_id,
                budget_credits=self.inp.budget_credits,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="Claim the site (skip if another run is active)",
        )
        if not claimed.claimed:
            self._skipped = True
            workflow.set_current_details(f"**skipped**: {claimed.reason}")
        return claimed.claimed

    def _queue_backlog(self, plan: RunPlan) -> None:
        s = self.s
        clustering = s.text["clustering"]
        for n, members in enumerate(plan.keyword_batches):
            clustering.members[str(n)] = list(members)
            clustering.pending.append(n)
        clustering.loop.total = len(plan.keyword_batches)
        for content_id, task_id in plan.prompts:
            s.task_of[str(content_id)] = task_id
        for stage, ids in (
            ("ideas", plan.clusters),
            ("content", plan.tasks),
            ("image_prompts", [content for content, _ in plan.prompts]),
        ):
            s.text[stage].pending.extend(ids)
            s.text[stage].loop.total += len(ids)
        s.tasks.pending.extend(plan.ideas)
        s.tasks.total += len(plan.ideas)
        s.images.pending.extend(list(pair) for pair in plan.images)
        s.images.articles.total += len(plan.images)
        for content_id, task_id in plan.images:
            s.task_of[str(content_id)] = task_id
        s.review.pending.extend(plan.review)
        s.review.total += len(plan.review)
        s.plan = plan.model_copy(
            update={
                "keyword_batches": [],
                "clusters": [],
                "ideas": [],
                "tasks": [],
                "prompts": [],
                "images": [],
                "review": [],
            }
        )

    async def _stages(self) -> bool:
        """Every stage at once; True when all are done (or the run was cancelled), False
        when the history is full and everything in flight has drained."""
        text = [self._text_stage(stage) for stage in TEXT_STAGES]
        flows = [self._tasks_stage(), self._images_stage(), self._review_stage()]
        results = await asyncio.gather(*text, *flows, self._recorder())
        return all(results)

    # ---- the text stages -------------------------------------------------------------
    async def _text_stage(self, stage: str) -> bool:
        st = self.s.text[stage]
        if st.done:
            return True
        loop = self.loops[stage]
        if not await loop.run():
            return False
        await loop.settle()
        await self._close_text_stage(stage)
        st.done = True
        return True

    def _upstream_running(self, stage: str) -> Callable[[], bool]:
        def running() -> bool:
            up = UPSTREAM.get(stage)
            return up is not None and not self._stage_done(up)

        return running

    def _width(self, stage: str) -> Callable[[], int]:
        def width() -> int:
            plan = self.s.plan
            if plan is None:
                return 1
            size = plan.batch_sizes.get(TEXT_STAGES[stage].name, 1)
            return max(1, min(size, plan.text_model.max_concurrency))

        return width

    def _credits_for(self, stage: str) -> Callable[[], Any]:
        """Before a stage claims an item: a hold covering it, within the budget."""

        async def ensure() -> bool:
            st, meter, plan = self.s.text[stage], self.meters[stage], self.s.plan
            assert plan is not None
            if not st.opened:
                st.opened = True
                await meter.open(
                    {"run_id": self.run_id, "stage": stage}, plan.text_model.model_name
                )
                meter.state.model_name = plan.text_model.model_name
                meter.state.credit_price_usd = plan.credit_price_usd
            estimate = plan.estimates[TEXT_STAGES[stage].name]
            if meter.reserved_left() >= estimate:
                return True
            want = estimate * self._width(stage)()
            left = self._budget_left()
            if left is not None:
                if left < estimate:
                    await self._pause_for(
                        "budget_exhausted",
                        f"the budget of {self.s.budget_credits} credits is used up",
                    )
                    return False
                want = min(want, left)
            st.holds += 1
            epoch = self.control.epoch
            hold = await meter.reserve(want, f"{meter.prefix}:hold:{st.holds}")
            if hold.ok:
                return True
            if self.control.refused_before_resume(epoch):
                return False  # asked again at once, on the credits the resume came with
            await self._pause_for("insufficient_credits", hold.message)
            return False

        return ensure

    async def _close_text_stage(self, stage: str) -> None:
        st, meter, fn = self.s.text[stage], self.meters[stage], TEXT_STAGES[stage]
        if not st.opened:
            return
        await meter.release()
        loop = st.loop
        if self.s.control.cancel_requested:
            outcome = "cancelled"
        elif loop.done == 0 and loop.failed > 0:
            outcome = "failed"
        else:
            outcome = "completed"
        failed = f", {loop.failed} failed" if loop.failed else ""
        money = f"{meter.state.credits_used} credits (${meter.state.cost_usd:.4f} provider cost)"
        summary = {
            "run_id": self.run_id,
            "stage": stage,
            "done": loop.done,
            "failed": loop.failed,
            "credits_used": meter.state.credits_used,
            "cost_usd": str(meter.state.cost_usd),
        }
        error = "; ".join(loop.errors) if outcome == "failed" else None
        kind = {"completed": "success", "cancelled": "cancelled", "failed": "failed"}[outcome]
        made = fn.done_phrase.format(n=loop.done)
        title = fn.done_title if kind == "success" else f"{fn.run_label} {outcome}"
        await asyncio.gather(
            meter.close(outcome, summary, error),
            meter.notify(kind, title, f"{made} using {money}{failed}", summary),  # type: ignore[arg-type]
        )

    def route(self, stage: str, item_id: int, result: dict[str, Any]) -> None:
        """Move what a text item made to the next stage."""
        s = self.s
        if stage == "clustering":
            self._feed("ideas", result.get("cluster_ids", []))
        elif stage == "ideas":
            ideas = list(result.get("idea_ids", []))
            s.tasks.pending.extend(ideas)
            s.tasks.total += len(ideas)
        elif stage == "content":
            content_id = result.get("content_id")
            if content_id is not None:
                s.task_of[str(content_id)] = item_id
                self._feed("image_prompts", [content_id])
        elif stage == "image_prompts":
            task_id = s.task_of.get(str(item_id))
            if task_id is not None:
                s.images.pending.append([item_id, task_id])
                s.images.articles.total += 1

    def _feed(self, stage: str, ids: list[int]) -> None:
        st = self.s.text[stage]
        st.pending.extend(ids)
        st.loop.total += len(ids)

    # ---- stage 3: writer tasks -------------------------------------------------------
    async def _tasks_stage(self) -> bool:
        t = self.s.tasks
        while not t.finished:
            await workflow.wait_condition(
                lambda: (
                    self._flow_may_work(t.pending) or self._flow_over("tasks", t) or self._full()
                )
            )
            if self._flow_over("tasks", t):
                t.finished = True
                break
            if self._full() and not self._flow_may_work(t.pending):
                return False
            batch = t.pending[:TASKS_PER_CALL]
            out = await workflow.execute_activity_method(
                AutomationActivities.create_tasks,
                CreateTasksInput(
                    account_id=self.inp.account_id, site_id=self.inp.site_id, idea_ids=batch
                ),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary=f"Writer tasks for {len(batch)} ideas",
            )
            del t.pending[: len(batch)]
            t.done += len(out.task_ids)
            t.failed += len(batch) - len(out.task_ids)
            self._feed("content", out.task_ids)
        return True

    def _flow_may_work(self, pending: list[Any]) -> bool:
        return bool(pending) and self.control.claiming and not self._full()

    def _flow_over(self, stage: str, st: FlowStageState) -> bool:
        """Nothing left and nothing coming (or the run is cancelled)."""
        if self.s.control.cancel_requested:
            return True
        return not st.pending and self._stage_done(UPSTREAM[stage])

    def _stale(self, report: ChildReport, told: int) -> bool:
        """The child's credit check began before one of the `told` resumes this run sent
        it: the top-up behind that resume answers it (a new child asks again)."""
        return (
            report.resumes is not None
            and report.resumes < told
            and workflow.patched(PATCH_STALE_REFUSAL)
        )

    # ---- stage 6: child image batches ----------------------------------------------------
    async def _images_stage(self) -> bool:
        img = self.s.images
        while not img.articles.finished:
            await workflow.wait_condition(
                lambda: (
                    self._pending_pause is not None
                    or self._children_out_of_step()
                    or bool(self._untold)
                    or self._child_due()
                    or self._images_over()
                    or self._full()
                )
            )
            if self._children_out_of_step():
                self._told = self._control_for_children()
                await self._tell_children(self._told)
                continue
            if self._untold:
                await self._retell_children()
                continue
            if self._pending_pause is not None:
                reason, self._pending_pause = self._pending_pause, None
                await self._pause_for(reason, "an image batch ran out of credits")
                continue
            if self._images_over():
                img.articles.finished = True
                break
            if self._child_due():
                await self._start_child()
                continue
            return False  # history full: running children report to the next run by signal
        return True

    def _control_for_children(self) -> str:
        if self.s.control.cancel_requested:
            return "cancel"
        return "pause" if self.s.control.paused else "resume"

    def _children_out_of_step(self) -> bool:
        """The run paused, resumed or was cancelled since the children were last told."""
        return bool(self.s.images.active) and self._control_for_children() != self._told

    def _child_due(self) -> bool:
        img, plan = self.s.images, self.s.plan
        if plan is None or not img.pending or not self.control.claiming or self._full():
            return False
        if len(img.active) >= self._children_wanted(plan):
            return False
        full_group = len(img.pending) >= plan.image_batch_size
        if full_group or self._stage_done("image_prompts"):
            return True
        # With no child running the image model idles: start one with what is ready
        # rather than wait for a full group (histories before this patch waited).
        return not img.active and workflow.patched(PATCH_EARLY_CHILD)

    def _children_wanted(self, plan: RunPlan) -> int:
        """Enough child batches at once to keep the image model's slots busy: each keeps
        two calls per slot it can use in flight, and one more child is always starting."""
        per_child = max(1, plan.image_batch_size * plan.images_per_article)
        busy = -(-2 * plan.image_max_concurrency // per_child)  # ceil
        return max(MIN_ACTIVE_CHILDREN, busy + 1)

    def _images_over(self) -> bool:
        img = self.s.images
        if img.active:
            return False
        if self.s.control.cancel_requested:
            return True
        return not img.pending and self._stage_done("image_prompts")

    async def _start_child(self) -> None:
        img, plan = self.s.images, self.s.plan
        assert plan is not None
        group, img.pending = (
            img.pending[: plan.image_batch_size],
            img.pending[plan.image_batch_size :],
        )
        cost = len(group) * plan.images_per_article * plan.image_credits_per_image
        left = self._budget_left()
        if left is not None and left < cost:
            img.pending[:0] = group
            await self._pause_for(
                "budget_exhausted", f"the budget of {self.s.budget_credits} credits is used up"
            )
            return
        img.started += 1
        child_id = (
            f"image-batch-{self.inp.account_id}-{self.run_id.rsplit('-', 1)[-1]}x{img.started}"
        )
        img.active[child_id] = group
        await workflow.start_child_workflow(
            ImageBatchWorkflow.run,
            ImageBatchInput(
                batch_id=child_id,
                account_id=self.inp.account_id,
                task_ids=[task for _, task in group],
                model=plan.image_model,
                max_in_article_images=plan.max_in_article_images,
                parent_id=self.run_id,
            ),
            id=child_id,
            parent_close_policy=ParentClosePolicy.ABANDON,
            search_attributes=self._child_attributes(),
            static_summary=f"Images for {len(group)} articles of run {self.run_id}",
            execution_timeout=timedelta(days=7),
        )

    def _child_attributes(self) -> TypedSearchAttributes:
        """The run's own attributes (account, site), the kind an image batch: findable
        beside it in the Temporal UI. A run started without attributes passes none."""
        pairs = [
            SearchAttributePair(pair.key, pair.value)  # type: ignore[arg-type]
            for pair in workflow.info().typed_search_attributes
            if pair.key.name in (ACCOUNT_ID.name, SITE_ID.name)
        ]
        if pairs:
            pairs.append(SearchAttributePair(RUN_KIND, "image_batch"))
        return TypedSearchAttributes(pairs)

    async def _tell_children(self, control: str) -> None:
        """Forward pause / resume / cancel to the running child batches. A child still
        starting cannot take a signal yet: it is told again a second later."""
        for child_id in list(self.s.images.active):
            try:
                await self._signal_child(child_id, control)
                self._untold.pop(child_id, None)
            except Exception:
                self._untold[child_id] = control

    async def _retell_children(self) -> None:
        """The images stage's retry of controls children could not take yet."""
        await workflow.sleep(timedelta(seconds=1))
        for child_id, control in list(self._untold.items()):
            if child_id not in self.s.images.active:
                del self._untold[child_id]
                continue
            try:
                await self._signal_child(child_id, control)
                del self._untold[child_id]
            except Exception:
                workflow.logger.info("child %s cannot take %s yet", child_id, control)

    async def _signal_child(self, child_id: str, control: str) -> None:
        """A resume is counted before it is sent (a report the child sends meanwhile is
        older than it) and taken back if the child could not take it."""
        told = self.s.images.resumes_told
        if control == "resume":
            told[child_id] = told.get(child_id, 0) + 1
        try:
            handle = workflow.get_external_workflow_handle(child_id)
            await handle.signal(control, ControlInput(reason="user"))
        except Exception:
            if control == "resume":
                told[child_id] -= 1
            raise

    # ---- stage 7: review, approval, publish slots ------------------------------------------
    async def _review_stage(self) -> bool:
        r = self.s.review
        while not r.finished:
            await workflow.wait_condition(
                lambda: (
                    self._flow_may_work(r.pending) or self._flow_over("review", r) or self._full()
                )
            )
            if self._flow_over("review", r):
                r.finished = True
                break
            if self._full() and not self._flow_may_work(r.pending):
                return False
            batch = r.pending[:REVIEW_PER_CALL]
            out = await workflow.execute_activity_method(
                AutomationActivities.finalize_content,
                FinalizeInput(
                    account_id=self.inp.account_id, site_id=self.inp.site_id, content_ids=batch
                ),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary=f"Review or approve {len(batch)} articles",
            )
            del r.pending[: len(batch)]
            r.done += out.review + out.approved
            r.failed += len(batch) - out.review - out.approved
            if out.scheduled:  # the site's publisher publishes them at their slots
                await workflow.execute_activity_method(
                    PokeActivities.poke_publisher,
                    SiteRef(account_id=self.inp.account_id, site_id=self.inp.site_id),
                    start_to_close_timeout=DB_TIMEOUT,
                    retry_policy=DB_RETRY,
                    summary=f"Tell the site's publisher of {len(out.scheduled)} new slots",
                )
        return True

    # ---- pausing, budget, the run's row ---------------------------------------------------
    async def _pause_for(self, reason: str, why: str) -> None:
        if not self.control.pause(reason):
            return
        self.s.notes += 1
        await self._notify(
            "automation_paused",
            "Automation paused",
            f"Automation paused: {why}. Top up (or raise the budget) and resume to go on.",
            f"{self.run_id}:paused:{self.s.notes}",
            {"pause_reason": reason},
            "warning",
        )

    async def _paused(self, reason: str, why: str) -> None:
        """A charge found no credits (the engine already paused the run)."""
        self.s.notes += 1
        await self._notify(
            "automation_paused",
            "Automation paused",
            f"Automation paused: {why}. Top up and resume to go on.",
            f"{self.run_id}:paused:{self.s.notes}",
            {"pause_reason": reason},
            "warning",
        )

    def _budget_left(self) -> int | None:
        if self.s.budget_credits is None:
            return None
        committed = self.s.images.credits_used
        for stage in TEXT_STAGES:
            meter = self.meters[stage]
            committed += meter.state.credits_used + meter.reserved_left()
        plan = self.s.plan
        if plan is not None:
            per_article = plan.images_per_article * plan.image_credits_per_image
            committed += sum(len(a) for a in self.s.images.active.values()) * per_article
        return self.s.budget_credits - committed

    async def _recorder(self) -> bool:
        """Keep the run's row in step with its status and current stage."""
        while True:
            await workflow.wait_condition(
                lambda: (
                    self._row_key() != self.s.recorded
                    or self._all_settled()
                    or (self._full() and self._drained())
                )
            )
            if self._all_settled():
                return True
            if self._full() and self._drained():
                return False
            await self._record()

    def _row_key(self) -> str:
        return f"{self.control.status}|{self.control.pause_reason}|{self._current_stage()}"

    def _all_settled(self) -> bool:
        return all(self._stage_done(stage) for stage in STAGES)

    def _drained(self) -> bool:
        return all(loop.in_flight == 0 for loop in self.loops.values())

    async def _record(self, finished: bool = False) -> None:
        p = self._progress()
        self.s.recorded = self._row_key()
        await workflow.execute_activity_method(
            AutomationActivities.record_run,
            RecordRunInput(
                run_id=self.run_id,
                status=p.status,
                pause_reason=p.pause_reason,
                current_stage=p.current_stage,
                credits_used=p.credits_used,
                cost_usd=p.cost_usd,
                summary={"stages": [s.model_dump() for s in p.stages]},
                finished=finished,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Record the run as {p.status}",
        )
        self._row_finished = finished  # a change of its own: the API shows the row's end

    async def _notify(
        self, kind: str, title: str, text: str, key: str, details: dict[str, Any], severity: str
    ) -> None:
        await workflow.execute_activity_method(
            LoggingActivities.notify,
            NotifyInput(
                account_id=self.inp.account_id,
                notification_type=kind,
                title=title,
                message=text,
                idempotency_key=key,
                severity=severity,
                details={**details, "run_id": self.run_id, "site_id": self.inp.site_id},
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Notify {kind}",
        )

    async def _publish_stop(self, stopped: bool) -> None:
        await workflow.execute_activity_method(
            RunActivities.set_run_stopped,
            RunStopInput(workflow_id=self.run_id, stopped=stopped),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="Stop waiting provider calls" if stopped else "Let provider calls go on",
        )

    # ---- the end ------------------------------------------------------------------------
    async def _finish(self) -> None:
        for stage in TEXT_STAGES:  # a stage that never finished (cancel) is closed now
            if not self.s.text[stage].done:
                await self._close_text_stage(stage)
                self.s.text[stage].done = True
        if self.s.control.cancel_requested:
            self.control.decide("cancelled")
        elif self._nothing_made():
            self.control.decide("failed")
        else:
            self.control.decide("completed")
        outcome = self.control.decided
        p = self._progress()
        lines = ", ".join(f"{s.name} {s.done}/{s.total}" for s in p.stages if s.total)
        text = f"Automation {outcome}: {lines or 'nothing to do'}; {p.credits_used} credits used"
        kind = {"completed": "automation_completed", "cancelled": "automation_cancelled"}.get(
            outcome, "automation_failed"
        )
        if self.s.control.stop_row:
            await workflow.execute_activity_method(
                RunActivities.forget_run,
                RunStopInput(workflow_id=self.run_id, stopped=False),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary="Forget the run's stop",
            )
        await self._notify(
            kind,
            f"Automation {outcome}",
            text,
            f"{self.run_id}:done",
            {"stages": [s.model_dump() for s in p.stages]},
            "info" if outcome == "completed" else "warning",
        )
        # The final status shows (query, row) only once the notification is out.
        self.control.finished()
        await self._record(finished=True)

    async def _fail(self, reason: str) -> None:
        self.control.decide("failed")
        await self._notify(
            "automation_failed", "Automation failed", reason, f"{self.run_id}:done", {}, "error"
        )
        self.control.finished()
        await self._record(finished=True)

    def _nothing_made(self) -> bool:
        loops = [self.s.text[s].loop for s in TEXT_STAGES]
        failed = sum(lp.failed for lp in loops) + self.s.images.images_failed
        done = sum(lp.done for lp in loops) + self.s.images.images_done + self.s.tasks.done
        return done == 0 and failed > 0

    # ---- views ----------------------------------------------------------------------------
    def _full(self) -> bool:
        return self.loops["clustering"].history_full()

    def _stage_done(self, stage: str) -> bool:
        if stage in TEXT_STAGES:
            return self.s.text[stage].done
        if stage == "images":
            return self.s.images.articles.finished
        return getattr(self.s, stage).finished

    def _current_stage(self) -> str | None:
        return next((stage for stage in STAGES if not self._stage_done(stage)), None)

    def _changed(self, stage: str) -> Callable[[], None]:
        def changed() -> None:
            balance = self.meters[stage].state.balance
            if balance is not None:
                self.s.balance = balance
            workflow.set_current_details(self._details())

        return changed

    def _stage_progress(self, stage: str) -> StageProgress:
        status = "completed" if self._stage_done(stage) else "pending"
        if stage in TEXT_STAGES:
            st, loop = self.s.text[stage], self.loops[stage]
            if not self._stage_done(stage) and (st.opened or loop.in_flight):
                status = "running"
            return StageProgress(
                name=stage,
                status=status,
                total=st.loop.total,
                done=st.loop.done,
                failed=st.loop.failed,
                credits_used=st.meter.credits_used,
                working_on=self._working_on(stage),
            )
        if stage == "images":
            a = self.s.images.articles
            if not a.finished and (self.s.images.active or a.done):
                status = "running"
            return StageProgress(
                name=stage,
                status=status,
                total=a.total,
                done=a.done,
                failed=a.failed,
                credits_used=self.s.images.credits_used,
                working_on=[
                    content_id for arts in self.s.images.active.values() for content_id, _ in arts
                ][:WORKING_SHOWN],
            )
        flow: FlowStageState = getattr(self.s, stage)
        if not flow.finished and flow.done:
            status = "running"
        return StageProgress(
            name=stage,
            status=status,
            total=flow.total,
            done=flow.done,
            failed=flow.failed,
            credits_used=0,
        )

    def _working_on(self, stage: str) -> list[int]:
        ids = self.loops[stage].working_on()
        if stage != "clustering":
            return ids
        # a clustering item is a batch of keywords: name its keywords
        members = self.s.text[stage].members
        return [k for batch in ids for k in members.get(str(batch), [])][:WORKING_SHOWN]

    async def _date_changes(self) -> None:
        """Date and announce every change of the progress: woken after any task that
        changed it, whatever changed it (an item counted, a signal, a stage opening).
        The version and `updated_at` tell an SSE watcher how old what it sees is (a
        query cannot tell when what it finds changed); the announcement reaches the API
        at once instead of at its next poll (domain/progress_feed.py)."""
        while True:
            await workflow.wait_condition(lambda: self._dated() != self._shown)
            self._date_if_changed()

    def _date_if_changed(self) -> None:
        """Date (and announce) the progress if it changed since last dated; also called
        before the workflow returns or continues as new, whose last change the waiting
        coroutine above would only see after the result had been built."""
        dated = self._dated()
        if dated == self._shown:
            return
        self._shown = dated
        self.s.version += 1
        self._change_times.append(workflow.now())
        if not workflow.unsafe.is_replaying():  # telemetry, as the logger: no command
            progress_feed.announce(self.run_id, self.s.version, self._progress(dated[0]))

    def _dated(self) -> tuple[RunProgress, bool]:
        """What a change is a change of: the progress, and the row's end (from then on
        the API shows the run's final progress, read from its row)."""
        return self._progress_body(), self._row_finished

    def _progress(self, body: RunProgress | None = None) -> RunProgress:
        """The progress (`body`, if already built) with its version and its time."""
        dated: dict[str, Any] = {"version": self.s.version}
        if self._change_times:
            dated["updated_at"] = self._change_times[-1]
        return (body if body is not None else self._progress_body()).model_copy(update=dated)

    def _progress_body(self) -> RunProgress:
        stages = [self._stage_progress(stage) for stage in STAGES]
        text_cost = sum((self.s.text[s].meter.cost_usd for s in TEXT_STAGES), Decimal("0"))
        return RunProgress(
            run_id=self.run_id,
            site_id=self.inp.site_id,
            status="skipped" if self._skipped else self.control.status,
            pause_reason=self.control.pause_reason,
            current_stage=None if self._skipped else self._current_stage(),
            stages=stages,
            credits_used=sum(s.credits_used for s in stages),
            cost_usd=text_cost + self.s.images.cost_usd,
            balance=self.s.balance,
            budget_credits=self.s.budget_credits,
            active_batches=sorted(self.s.images.active),
        )

    def _details(self) -> str:
        p = self._progress()
        stages = " · ".join(f"{s.name} {s.done}/{s.total}" for s in p.stages)
        return (
            f"**{p.status}** · {stages} · credits used {p.credits_used} · "
            f"${p.cost_usd:.4f} · balance {p.balance}"
        )
