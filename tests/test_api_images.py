"""Image-batch routes end to end: HTTP → Temporal dev server → worker → simulator → DB."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import sqlalchemy as sa
from temporalio.client import Client

from api.deps import get_engine, get_settings_dep, get_temporal
from api.main import create_app
from domain.reconcile import reconcile
from simulator.server import SimulatorThread
from tests import builders, temporal_fixtures
from tests.temporal_fixtures import WorkerCtx, running_worker
from workflows.image_batch import BatchProgress, ImageBatchWorkflow

pytestmark = pytest.mark.temporal
FINISHED = {"completed", "failed", "cancelled"}


@asynccontextmanager
async def api_client(wctx: WorkerCtx, temporal: object = None) -> AsyncIterator[httpx.AsyncClient]:
    """The real app in this test's event loop, wired to the test's DB, queue and Temporal
    (`wctx.client` unless another client object is given)."""
    app = create_app(wctx.settings, connect_temporal=False)
    client = wctx.client if temporal is None else temporal
    app.dependency_overrides[get_engine] = lambda: wctx.engine
    app.dependency_overrides[get_settings_dep] = lambda: wctx.settings
    app.dependency_overrides[get_temporal] = lambda: client
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as http:
        yield http


@pytest_asyncio.fixture
async def api(wctx: WorkerCtx) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(wctx) as client:
        yield client


def seeded(
    wctx: WorkerCtx,
    credits: int,
    n_tasks: int = 2,
    max_concurrency: int = 10,
    titles: list[str] | None = None,
) -> tuple[dict, list[int], int]:
    builders.billing_config(wctx.engine)
    builders.model_config(
        wctx.engine, model_name="img", credits_per_image=2, max_concurrency=max_concurrency
    )
    acct, key = builders.account(wctx.engine, credits=credits)
    site = builders.site(wctx.engine, acct, max_in_article_images=1, image_model="img")
    titles = titles or [f"T{i}" for i in range(n_tasks)]
    tasks = [builders.task_with_content(wctx.engine, acct, site.id, t)[0].id for t in titles]
    return {"Authorization": f"Bearer {key}"}, tasks, acct


async def poll(api: httpx.AsyncClient, headers: dict, batch_id: str, done) -> dict:
    for _ in range(600):
        body = (await api.get(f"/images/batches/{batch_id}", headers=headers)).json()
        if done(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch never reached the state; last {body}")


async def closed(wctx: WorkerCtx, batch_id: str) -> BatchProgress:
    """Wait for the workflow itself to close. The progress query may already report the
    final status while the finishing activities (close the log, notify, record the batch)
    are still running; side effects are only checked once the run has really ended."""
    handle = wctx.client.get_workflow_handle_for(ImageBatchWorkflow.run, batch_id)
    return await asyncio.wait_for(handle.result(), timeout=60)


async def events(api: httpx.AsyncClient, headers: dict, batch_id: str) -> list[dict]:
    """Every snapshot the batch's Server-Sent Events stream sends, to its end."""
    snapshots = []
    url = f"/images/batches/{batch_id}/events"
    async with api.stream("GET", url, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                snapshots.append(json.loads(line[6:]))
    return snapshots


async def test_start_watch_and_finish_a_batch(api: httpx.AsyncClient, wctx: WorkerCtx):
    wctx.sim.configure(latency_s=0.5)  # each image in flight over a few event ticks
    headers, tasks, _ = seeded(wctx, credits=50, titles=["Tea", "Coffee"])
    resp = await api.post("/images/batches", json={"task_ids": tasks}, headers=headers)
    assert resp.status_code == 202, resp.text
    started = resp.json()
    assert started["batch_id"].startswith("image-batch-") and started["status"] == "running"
    assert (started["images"], started["credits_quoted"]) == (4, 8)
    snapshots = await events(api, headers, started["batch_id"])
    assert snapshots[-1]["status"] == "completed" and snapshots[-1]["current_items"] == []
    # the images in flight, by name
    named = {item["title"] for s in snapshots for item in s["current_items"]}
    assert named and named <= {
        f"{kind} for “{title}”"
        for kind in ("Featured image", "In-article image 1")
        for title in ("Tea", "Coffee")
    }, named
    balances = [s["balance"] for s in snapshots if s["balance"] is not None]
    assert balances == sorted(balances, reverse=True) and balances[-1] == 42
    final = await poll(api, headers, started["batch_id"], lambda b: b["status"] == "completed")
    assert (final["images_done"], final["credits_used"], final["balance"]) == (4, 8, 42)
    result = await closed(wctx, started["batch_id"])
    assert (result.status, result.images_done, result.balance) == ("completed", 4, 42)
    balance = (await api.get("/credits/balance", headers=headers)).json()
    assert balance == {"credits": 42, "reserved": 0, "available": 42}
    usage = (await api.get("/credits/usage", headers=headers)).json()
    assert usage["count"] == 4 and all(u["cost_usd"] for u in usage["data"])
    notes = (await api.get("/notifications", headers=headers)).json()["data"]
    assert [n["notification_type"] for n in notes] == ["ai_image_success"]
    control = await api.post(f"/images/batches/{started['batch_id']}/pause", headers=headers)
    assert control.status_code == 409 and "already finished" in control.json()["detail"]
    assert reconcile(wctx.engine) == []


async def test_quote_over_available_credits_is_402_and_starts_nothing(
    api: httpx.AsyncClient, wctx: WorkerCtx
):
    headers, tasks, _ = seeded(wctx, credits=7)
    resp = await api.post("/images/batches", json={"task_ids": tasks}, headers=headers)
    assert resp.status_code == 402
    assert resp.json()["detail"] == "Insufficient credits. Required: 8, Available: 7"
    assert wctx.sim.stats()["images_generated"] == 0


async def test_unknown_tasks_and_tasks_without_content_are_named(
    api: httpx.AsyncClient, wctx: WorkerCtx
):
    headers, tasks, acct = seeded(wctx, credits=50)
    resp = await api.post("/images/batches", json={"task_ids": [*tasks, 9999]}, headers=headers)
    assert resp.status_code == 422 and "9999" in str(resp.json()["detail"])
    from sqlmodel import Session

    from models import Task

    with Session(wctx.engine) as s:
        bare = Task(account_id=acct, site_id=1, title="no content yet")
        s.add(bare)
        s.commit()
        bare_id = bare.id
    resp = await api.post("/images/batches", json={"task_ids": [bare_id]}, headers=headers)
    assert resp.status_code == 422 and f"[{bare_id}]" in str(resp.json()["detail"])
    for bad in (
        {"task_ids": []},
        {"task_ids": ["x"]},
        {"task_ids": [1], "max_in_article_images": 99},
        {},
    ):
        resp = await api.post("/images/batches", json=bad, headers=headers)
        assert resp.status_code == 422, (bad, resp.text)
    resp = await api.post(
        "/images/batches", json={"task_ids": tasks, "model": "nope"}, headers=headers
    )
    assert resp.status_code == 422 and "AI model 'nope' is not configured" in str(
        resp.json()["detail"]
    )


async def test_controls_and_another_accounts_batch(api: httpx.AsyncClient, wctx: WorkerCtx):
    # One image at a time, 0.3 s each, 20 images: the batch lasts ~6 s of unpaused work, so
    # pause, resume and cancel all land while images are still waiting to be claimed.
    wctx.sim.configure(latency_s=0.3)
    headers, tasks, _ = seeded(wctx, credits=100, n_tasks=10, max_concurrency=1)
    batch_id = (
        await api.post("/images/batches", json={"task_ids": tasks}, headers=headers)
    ).json()["batch_id"]
    _, other_key = builders.account(wctx.engine, credits=5)
    other = {"Authorization": f"Bearer {other_key}"}
    assert (await api.get(f"/images/batches/{batch_id}", headers=other)).status_code == 404
    assert (await api.get(f"/images/batches/{batch_id}/events", headers=other)).status_code == 404
    assert (await api.post(f"/images/batches/{batch_id}/cancel", headers=other)).status_code == 404
    assert (await api.get("/images/batches/not-a-batch", headers=headers)).status_code == 404
    pause = await api.post(f"/images/batches/{batch_id}/pause", headers=headers)
    assert pause.status_code == 202 and pause.json() == {"batch_id": batch_id, "requested": "pause"}
    # (A pause may land before the plan, when nothing is counted yet: wait for the plan.)
    paused = await poll(
        api,
        headers,
        batch_id,
        lambda b: (b["status"] == "paused" and b["images_total"] > 0) or b["status"] in FINISHED,
    )
    assert (paused["status"], paused["pause_reason"]) == ("paused", "user"), paused
    pending = paused["images_total"] - paused["images_done"] - paused["images_failed"]
    assert pending > paused["images_in_flight"], f"the pause came too late to hold back: {paused}"
    assert (
        await api.post(f"/images/batches/{batch_id}/resume", headers=headers)
    ).status_code == 202
    await poll(api, headers, batch_id, lambda b: b["status"] == "running")
    assert (
        await api.post(f"/images/batches/{batch_id}/cancel", headers=headers)
    ).status_code == 202
    final = await poll(api, headers, batch_id, lambda b: b["status"] == "cancelled")
    assert final["credits_reserved"] == 0
    result = await closed(wctx, batch_id)
    assert result.status == "cancelled" and result.images_done < result.images_total, result
    assert reconcile(wctx.engine) == []


class _NoTemporal:
    """Stands in for the Temporal client where none may be used: any call fails the test."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"Temporal was used ({name}) to read a finished batch")


async def test_a_finished_batch_answers_from_its_row_with_no_worker(
    temporal_client: Client,
    task_queue: str,
    engine: sa.Engine,
    db_url: str,
    sim: SimulatorThread,
    tmp_path: Path,
):
    """A finished batch's progress is its stored row: with the worker stopped (nobody to
    replay the history for a query) the GET answers at once, errors and balance included,
    without touching Temporal at all."""
    # (Called through the module: imported by name, pytest would collect it as a test.)
    settings = temporal_fixtures.test_settings(db_url, sim.url, tmp_path / "media", task_queue)
    wctx = WorkerCtx(temporal_client, task_queue, engine, settings, sim)
    headers, tasks, _ = seeded(wctx, credits=50, titles=["Safe", "Bad [unsafe] topic"])
    async with running_worker(temporal_client, settings, engine), api_client(wctx) as api:
        resp = await api.post("/images/batches", json={"task_ids": tasks}, headers=headers)
        assert resp.status_code == 202, resp.text
        batch_id = resp.json()["batch_id"]
        result = await closed(wctx, batch_id)
    assert (result.status, result.images_done, result.images_failed) == ("completed", 2, 2)
    assert any("content policy" in e.lower() for e in result.errors), result.errors

    for temporal in (temporal_client, _NoTemporal()):  # the worker is gone; then Temporal too
        async with api_client(wctx, temporal) as api:
            get = api.get(f"/images/batches/{batch_id}", headers=headers)
            resp = await asyncio.wait_for(get, timeout=5)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "completed" and body["errors"] == result.errors
        assert (body["images_total"], body["images_done"], body["images_failed"]) == (4, 2, 2)
        assert (body["credits_used"], body["balance"]) == (result.credits_used, result.balance)
        assert (body["images_in_flight"], body["credits_reserved"]) == (0, 0)
        assert Decimal(str(body["cost_usd"])) == result.cost_usd
