"""The API never blocks its event loop on the database.

While another connection holds the database's write lock, a POST that starts an image
batch waits for it (its row must be written); requests that need no write (the OpenAPI
document, a finished batch's progress) must still answer at once. The app runs under
httpx's ASGI transport in this test's event loop, so a route that blocks the loop also
stops the test's other requests; that is what makes this test fail on blocking code.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy import event, insert
from sqlalchemy.engine import make_url
from temporalio.client import Client

from api.deps import get_engine, get_settings_dep, get_temporal
from api.main import create_app
from core.settings import Settings
from models.db import utcnow
from models.runs import ImageBatch
from tests import builders
from workflows.client import new_batch_id

pytestmark = pytest.mark.temporal

HOLD_S = 3.0  # the longest the lock is held: what a blocked loop would wait for
FAST_S = 1.0  # what "answers at once" means here, with room for a busy test machine
# The statement a batch's row write blocks on: SQLite takes its write lock at BEGIN
# IMMEDIATE; on PostgreSQL the INSERT waits for the table lock.
BATCH_WRITE = re.compile(r"\s*(BEGIN IMMEDIATE|INSERT INTO igny8_image_batches)", re.I)


class WriteLock:
    """The database's write lock, held by another thread on a connection outside the
    app's pool until `release()` (or HOLD_S at the latest, so a blocked loop, which cannot
    release it, still ends the test)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.released_at = float("inf")
        self._acquired = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._hold, name="write-lock", daemon=True)

    def __enter__(self) -> WriteLock:
        self._thread.start()
        if not self._acquired.wait(10):
            raise RuntimeError("could not take the write lock")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return not self._release.is_set() and self._thread.is_alive()

    def release(self) -> float:
        """Give the lock up; returns when it was (monotonic clock)."""
        self._release.set()
        self._thread.join(10)
        return self.released_at

    def _hold(self) -> None:
        with self._locked():
            self._acquired.set()
            self._release.wait(HOLD_S)
            self._release.set()
            self.released_at = time.monotonic()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self.engine.dialect.name == "sqlite":
            conn = sqlite3.connect(make_url(self.engine.url).database or "", timeout=10)
            conn.isolation_level = None
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        else:
            with self.engine.connect() as conn, conn.begin():
                conn.exec_driver_sql("LOCK TABLE igny8_image_batches IN EXCLUSIVE MODE")
                yield


class FirstBatchWrite:
    """Sees (from an engine event) when the app starts writing a batch's row, and when."""

    def __init__(self) -> None:
        self.seen = threading.Event()
        self.at = float("inf")

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not self.seen.is_set() and BATCH_WRITE.match(statement):
            self.at = time.monotonic()
            self.seen.set()


@contextmanager
def watching_batch_writes(engine: sa.Engine) -> Iterator[FirstBatchWrite]:
    watch = FirstBatchWrite()
    event.listen(engine, "before_cursor_execute", watch)
    try:
        yield watch
    finally:
        event.remove(engine, "before_cursor_execute", watch)


async def finished_at(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    """The response and when it arrived (monotonic clock)."""
    response = await request
    return response, time.monotonic()


@asynccontextmanager
async def api_client(
    engine: sa.Engine, db_url: str, temporal: Client, task_queue: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app under httpx's ASGI transport, in this test's event loop, started by
    its lifespan as uvicorn starts it."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=db_url,
        task_queue=task_queue,
    )
    app: FastAPI = create_app(settings, connect_temporal=False)
    app.dependency_overrides[get_engine] = lambda: engine
    app.dependency_overrides[get_settings_dep] = lambda: settings
    app.dependency_overrides[get_temporal] = lambda: temporal
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


def seeded(engine: sa.Engine) -> tuple[dict[str, str], list[int], int]:
    """An account with credits, a site with an image model, and two tasks with content."""
    builders.billing_config(engine)
    builders.model_config(engine, model_name="img", credits_per_image=2)
    acct, key = builders.account(engine, credits=50)
    site = builders.site(engine, acct, max_in_article_images=1, image_model="img")
    tasks = [builders.task_with_content(engine, acct, site.id, f"T{i}")[0].id for i in range(2)]
    return {"Authorization": f"Bearer {key}"}, tasks, acct


def finished_batch(engine: sa.Engine, account_id: int) -> str:
    """A batch that has finished, as the worker leaves its row."""
    batch_id = new_batch_id(account_id)
    with engine.begin() as conn:
        conn.execute(
            insert(ImageBatch.__table__).values(
                batch_id=batch_id,
                account_id=account_id,
                status="completed",
                images_total=2,
                images_done=1,
                images_failed=1,
                credits_used=2,
                cost_usd=Decimal("0.04"),
                task_ids=[1],
                errors=["image 7: refused"],
                created_at=utcnow(),
                finished_at=utcnow(),
            )
        )
    return batch_id


async def test_reads_answer_while_a_batch_start_waits_for_the_write_lock(
    engine: sa.Engine, db_url: str, temporal_client: Client, task_queue: str
) -> None:
    headers, tasks, acct = seeded(engine)
    done_id = finished_batch(engine, acct)
    async with api_client(engine, db_url, temporal_client, task_queue) as api:
        with WriteLock(engine) as lock, watching_batch_writes(engine) as write:
            body = {"task_ids": tasks}
            post = asyncio.create_task(
                finished_at(api.post("/api/v1/images/batches", json=body, headers=headers))
            )
            assert await asyncio.to_thread(write.seen.wait, 10), "the POST never wrote its row"
            (spec, spec_at), (progress, progress_at) = await asyncio.gather(
                finished_at(api.get("/openapi.json")),
                finished_at(api.get(f"/api/v1/images/batches/{done_id}", headers=headers)),
            )
            assert lock.held, "the reads only answered once the lock was given up: loop blocked"
            assert not post.done(), "the POST did not wait for the write lock"
            released_at = lock.release()
        started, started_at = await post

    assert spec.status_code == 200 and spec_at - write.at < FAST_S, spec_at - write.at
    assert progress.status_code == 200, progress.text
    assert progress_at - write.at < FAST_S, progress_at - write.at
    got = progress.json()
    assert (got["status"], got["errors"], got["balance"]) == ("completed", ["image 7: refused"], 50)
    assert started.status_code == 202, started.text
    assert started_at >= released_at, "the POST finished before the lock was released"
    await temporal_client.get_workflow_handle(started.json()["batch_id"]).terminate()


async def test_the_first_openapi_request_builds_the_document_off_the_loop(
    engine: sa.Engine, db_url: str
) -> None:
    """FastAPI builds the OpenAPI document on the event loop at the first request (~0.75 s
    of CPU here), stalling every request meanwhile; ours builds it in the thread pool, so
    a liveness probe sent just after it answers first."""
    settings = Settings(_env_file=None, environment="test", database_url=db_url)  # type: ignore[call-arg]
    app: FastAPI = create_app(settings, connect_temporal=False)  # no lifespan: not built yet
    app.dependency_overrides[get_engine] = lambda: engine
    assert app.openapi_schema is None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
        spec = asyncio.create_task(finished_at(api.get("/openapi.json")))
        await asyncio.sleep(0)  # the spec request is under way first
        (live, live_at), (doc, doc_at) = await asyncio.gather(
            finished_at(api.get("/api/v1/health/live")), spec
        )
    assert live.status_code == 200 and doc.status_code == 200
    assert "/api/v1/images/batches/{batch_id}/events" in doc.json()["paths"]
    assert live_at < doc_at, "the probe waited for the OpenAPI document: the loop was blocked"
