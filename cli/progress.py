"""Follow an image batch through the API with a live progress bar (images and credits)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

TERMINAL = {"completed", "cancelled", "failed"}


def start_batch(
    client: httpx.Client, task_ids: list[int], model: str | None, max_in_article: int | None
) -> str:
    body: dict[str, Any] = {"task_ids": task_ids}
    if model:
        body["model"] = model
    if max_in_article is not None:
        body["max_in_article_images"] = max_in_article
    resp = client.post("/api/v1/images/batches", json=body)
    if resp.status_code != 202:
        raise SystemExit(
            f"could not start the batch ({resp.status_code}): {resp.json().get('detail')}"
        )
    return str(resp.json()["batch_id"])


def follow_batch(
    console: Console,
    api_url: str,
    api_key: str,
    task_ids: list[int],
    model: str | None,
    max_in_article: int | None,
    poll_s: float = 0.5,
) -> dict[str, Any]:
    """Start the batch, draw its progress until it ends, return the last progress."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        batch_id = start_batch(client, task_ids, model, max_in_article)
        console.print(f"batch [bold]{batch_id}[/bold] started (see it in the Temporal UI)")
        columns = (
            TextColumn("[bold]{task.fields[status]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "images · {task.fields[failed]} failed · {task.fields[credits]} credits · balance {task.fields[balance]}"
            ),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as bar:
            row = bar.add_task(
                "images", total=None, status="starting", failed=0, credits=0, balance="?"
            )
            while True:
                progress = client.get(f"/api/v1/images/batches/{batch_id}").json()
                bar.update(
                    row,
                    total=progress["images_total"] or None,
                    completed=progress["images_done"] + progress["images_failed"],
                    status=progress["status"],
                    failed=progress["images_failed"],
                    credits=progress["credits_used"],
                    balance=progress["balance"],
                )
                if progress["status"] in TERMINAL:
                    break
                time.sleep(poll_s)
    for error in progress.get("errors") or []:
        console.print(f"[yellow]{error}[/yellow]")
    return dict(progress)
