"""Starting workflows from outside (API, CLI, benchmarks): ids, search attributes and
summaries that make a run findable and readable in the Temporal UI."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from core.temporal import ACCOUNT_ID, RUN_KIND, SITE_ID
from workflows.image_batch import BatchProgress, ImageBatchInput, ImageBatchWorkflow


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
