"""Starting workflows from outside (API, CLI, benchmarks): ids, search attributes and
summaries that make a run findable and readable in the Temporal UI."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    WorkflowHandle,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from core.temporal import ACCOUNT_ID, RUN_KIND, SITE_ID
from workflows.automation_run import AutomationRunInput, AutomationRunWorkflow, RunProgress
from workflows.image_batch import BatchProgress, ImageBatchInput, ImageBatchWorkflow
from workflows.text_batch import TextBatchInput, TextBatchProgress, TextBatchWorkflow


def new_batch_id(account_id: int) -> str:
    return f"image-batch-{account_id}-{uuid.uuid4().hex[:12]}"


def batch_account(batch_id: str) -> int | None:
    """The account a batch id belongs to, or None if it is not a batch id."""
    parts = batch_id.split("-")
    if len(parts) != 4 or parts[:2] != ["image", "batch"] or not parts[2].isdigit():
        return None
    return int(parts[2])


async def start_image_batch(
    client: Client,
    task_queue: str,
    *,
    account_id: int,
    task_ids: list[int],
    model: str | None = None,
    max_in_article_images: int | None = None,
    site_id: int | None = None,
    batch_id: str | None = None,
    history_limit: int | None = None,
) -> WorkflowHandle[ImageBatchWorkflow, BatchProgress]:
    batch_id = batch_id or new_batch_id(account_id)
    inp = ImageBatchInput(
        batch_id=batch_id,
        account_id=account_id,
        task_ids=task_ids,
        model=model,
        max_in_article_images=max_in_article_images,
        **({"history_limit": history_limit} if history_limit else {}),
    )
    attrs: list[SearchAttributePair] = [
        SearchAttributePair(ACCOUNT_ID, account_id),
        SearchAttributePair(RUN_KIND, "image_batch"),
    ]
    if site_id is not None:
        attrs.append(SearchAttributePair(SITE_ID, site_id))
    return await client.start_workflow(
        ImageBatchWorkflow.run,
        inp,
        id=batch_id,
        task_queue=task_queue,
        search_attributes=TypedSearchAttributes(attrs),
        static_summary=f"Image batch: {len(task_ids)} tasks, account {account_id}"
        + (f", model {model}" if model else ""),
        execution_timeout=timedelta(days=7),
    )


def new_text_batch_id(function_name: str, account_id: int) -> str:
    return f"text-batch-{account_id}-{function_name.replace('_', '-')}-{uuid.uuid4().hex[:12]}"


async def start_text_batch(
    client: Client,
    task_queue: str,
    *,
    account_id: int,
    function_name: str,
    item_ids: list[int],
    model: str | None = None,
    site_id: int | None = None,
    batch_id: str | None = None,
) -> WorkflowHandle[TextBatchWorkflow, TextBatchProgress]:
    """Run one text AI function (e.g. generate_image_prompts) over the account's items."""
    batch_id = batch_id or new_text_batch_id(function_name, account_id)
    attrs: list[SearchAttributePair] = [
        SearchAttributePair(ACCOUNT_ID, account_id),
        SearchAttributePair(RUN_KIND, "text_batch"),
    ]
    if site_id is not None:
        attrs.append(SearchAttributePair(SITE_ID, site_id))
    return await client.start_workflow(
        TextBatchWorkflow.run,
        TextBatchInput(
            batch_id=batch_id,
            account_id=account_id,
            function_name=function_name,
            item_ids=item_ids,
            model=model,
            site_id=site_id,
        ),
        id=batch_id,
        task_queue=task_queue,
        search_attributes=TypedSearchAttributes(attrs),
        static_summary=f"{function_name}: {len(item_ids)} items, account {account_id}",
        execution_timeout=timedelta(days=7),
    )


def new_run_id(account_id: int, site_id: int) -> str:
    """`automation-<account>-<site>-<hex>`: findable by account and site in the UI."""
    return f"automation-{account_id}-{site_id}-{uuid.uuid4().hex[:12]}"


def run_owner(run_id: str) -> tuple[int, int] | None:
    """(account, site) of a run id, or None if it is not a run id."""
    parts = run_id.split("-")
    if (
        len(parts) < 4
        or parts[0] != "automation"
        or not (parts[1].isdigit() and parts[2].isdigit())
    ):
        return None
    return int(parts[1]), int(parts[2])


async def start_automation_run(
    client: Client,
    task_queue: str,
    *,
    account_id: int,
    site_id: int,
    run_id: str,
    budget_credits: int | None = None,
    history_limit: int | None = None,
) -> WorkflowHandle[AutomationRunWorkflow, RunProgress]:
    inp = AutomationRunInput(
        run_id=run_id,
        account_id=account_id,
        site_id=site_id,
        budget_credits=budget_credits,
        **({"history_limit": history_limit} if history_limit else {}),
    )
    budget = f", budget {budget_credits} credits" if budget_credits is not None else ""
    return await client.start_workflow(
        AutomationRunWorkflow.run,
        inp,
        id=run_id,
        task_queue=task_queue,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(ACCOUNT_ID, account_id),
                SearchAttributePair(SITE_ID, site_id),
                SearchAttributePair(RUN_KIND, "automation_run"),
            ]
        ),
        static_summary=f"Automation run: site {site_id}, account {account_id}{budget}",
        execution_timeout=timedelta(days=30),
    )


def schedule_id(account_id: int, site_id: int) -> str:
    return f"automation-schedule-{account_id}-{site_id}"


def automation_schedule(
    task_queue: str,
    account_id: int,
    site_id: int,
    *,
    frequency: str,
    at: str,
    weekday: int | None,
    timezone: str,
) -> Schedule:
    """The site's run schedule: daily or weekly at a local time in the site's timezone.
    Temporal starts the run; a start while this schedule's previous run is still going is
    skipped (overlap SKIP), and the run itself skips, and records it, when the site has
    another active run (one started from the API)."""
    hour, minute = (int(part) for part in at.split(":"))
    days = (
        [ScheduleRange((weekday + 1) % 7)]  # Temporal counts weekdays from Sunday
        if frequency == "weekly" and weekday is not None
        else [ScheduleRange(0, 6)]
    )
    calendar = ScheduleCalendarSpec(
        hour=[ScheduleRange(hour)], minute=[ScheduleRange(minute)], day_of_week=days,
        comment=f"{frequency} at {at} {timezone}",
    )  # fmt: skip
    action = ScheduleActionStartWorkflow(
        AutomationRunWorkflow.run,
        AutomationRunInput(run_id="", account_id=account_id, site_id=site_id, scheduled=True),
        id=f"automation-{account_id}-{site_id}-scheduled",
        task_queue=task_queue,
        execution_timeout=timedelta(days=30),
        typed_search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(ACCOUNT_ID, account_id),
                SearchAttributePair(SITE_ID, site_id),
                SearchAttributePair(RUN_KIND, "automation_run"),
            ]
        ),
        static_summary=f"Scheduled automation run: site {site_id}, account {account_id}",
    )
    return Schedule(
        action=action,
        spec=ScheduleSpec(calendars=[calendar], time_zone_name=timezone),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def sync_schedule(
    client: Client,
    task_queue: str,
    account_id: int,
    site_id: int,
    *,
    enabled: bool,
    frequency: str,
    at: str,
    weekday: int | None,
    timezone: str,
) -> bool:
    """Create, update or delete the site's Temporal Schedule to match its config; True if
    a schedule exists afterwards."""
    handle = client.get_schedule_handle(schedule_id(account_id, site_id))
    if not enabled:
        try:
            await handle.delete()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        return False
    schedule = automation_schedule(
        task_queue, account_id, site_id,
        frequency=frequency, at=at, weekday=weekday, timezone=timezone,
    )  # fmt: skip
    try:
        await client.create_schedule(schedule_id(account_id, site_id), schedule)
    except ScheduleAlreadyRunningError:
        await handle.update(lambda _: ScheduleUpdate(schedule=schedule))
    return True
