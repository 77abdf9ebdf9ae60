"""The FastAPI application: `create_app()` builds it, the lifespan wires its resources.

Nothing happens at import: the engine and the Temporal client are made when the app
starts (`uvicorn api.main:create_app --factory`, or `with TestClient(app)`), so tests and
tools can import this module freely and pass their own `Settings`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool

from api.dashboard.routes import install_dashboard
from api.deps import set_thread_limit
from api.errors import document_undecodable_bodies, install_error_handlers
from api.observability import bind_path_ids, wire
from api.routes import api_router
from api.run_events import RunEvents
from api.schemas import OPENAPI_EXTRA_MODELS
from api.temporal import TemporalConnector
from api.work_items import TitleCache
from core.heap import freeze_startup_heap
from core.observability import Observability
from core.settings import Settings, get_settings
from domain import pg_notify
from domain.ledger import Ledger
from models.db import make_engine
from providers.media_store import media_store_from_settings

API_PREFIX = "/api/v1"
logger = logging.getLogger("igny8.api")

DESCRIPTION = """\
igny8 turns a site's SEO keywords into published, illustrated articles with AI, and bills
every AI call in prepaid credits.

Authenticate with `Authorization: Bearer <api key>`; admin routes take the admin key the
same way. Errors are JSON `{"detail": ...}`; a 422's detail is a list of
`{loc, msg, type}`. A body that is not JSON is a 422 (`json_invalid`); one that cannot
even be decoded (not UTF-8, nested too deeply) is a 400. Another account's objects
answer 404.
"""

TAGS: list[dict[str, str]] = [
    {"name": "health", "description": "Is the API up, and can it reach its database and Temporal?"},
    {"name": "admin", "description": "Accounts, credit top-ups and AI model prices (admin key)."},
    {"name": "credits", "description": "Balance, holds, the ledger and per-call usage with USD."},
    {"name": "logs", "description": "AI task logs and notifications."},
    {"name": "sites", "description": "Sites, sectors and their automation/publishing settings."},
    {"name": "keywords", "description": "Keyword import (JSON or CSV) and lists."},
    {"name": "pipeline", "description": "Clusters, ideas, tasks, content and images of a site."},
    {
        "name": "images",
        "description": "Image batches: start, watch live, pause, resume, cancel; an image's file.",
    },
    {"name": "review", "description": "Approve, reject, schedule and unschedule content."},
    {"name": "calendar", "description": "A site's publishing calendar and workflow stats."},
    {"name": "integrations", "description": "A site's WordPress connection (write-only password)."},
    {
        "name": "automation",
        "description": "Automation runs: keywords to reviewed, illustrated, scheduled articles; "
        "start, list, watch (also as Server-Sent Events), pause, resume, cancel.",
    },
]


def _version() -> str:
    try:
        return version("igny8")
    except PackageNotFoundError:
        return "0.0.0"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Engine, ledger, media store and (if reachable) Temporal on app.state, and the thread
    pool sized to the database pool; the engine is disposed on exit."""
    settings: Settings = app.state.settings
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    obs: Observability | None = app.state.observability
    connector = TemporalConnector(
        settings,
        enabled=app.state.connect_temporal,
        client_options=obs.client_options() if obs else None,
    )
    if obs is not None:  # /metrics on API_METRICS_PORT (0: not served)
        obs.serve(settings.api_metrics_port)
    set_thread_limit(settings)
    app.state.engine = engine
    app.state.ledger = Ledger(engine, hold_ttl_seconds=settings.hold_ttl_seconds)
    app.state.media_store = media_store_from_settings(settings)
    feed_url = pg_notify.postgres_url(engine) if settings.progress_feed else None
    app.state.run_events = RunEvents(feed_url=feed_url)
    app.state.run_events.start()
    app.state.temporal_connector = connector
    app.state.temporal = await connector.connect()
    # the OpenAPI document takes ~0.75 s of CPU to build here: once, now, off the loop
    await run_in_threadpool(app.openapi)
    if getattr(app.state, "freeze_heap", False):
        freeze_startup_heap()  # full GC passes walk only what requests build
    try:
        yield
    finally:
        await app.state.run_events.close()
        app.state.temporal = None
        engine.dispose()
        if obs is not None:
            obs.stop_servers()


def _with_extra_schemas(app: FastAPI) -> None:
    """Add to the OpenAPI document what FastAPI cannot see: models referenced only by
    hand-written request bodies, and the 400 FastAPI answers for an undecodable body."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        _, defs = models_json_schema(
            [(model, "validation") for model in OPENAPI_EXTRA_MODELS],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        document_undecodable_bodies(app, schema)
        return schema

    lock = threading.Lock()  # built once, even when two first requests come together

    def built_once() -> dict[str, Any]:
        with lock:
            return openapi()

    app.openapi = built_once  # type: ignore[method-assign]
    _serve_openapi_off_the_loop(app)


def _serve_openapi_off_the_loop(app: FastAPI) -> None:
    """FastAPI's own `/openapi.json` builds the document on the event loop the first
    time, stalling every other request for as long: this one builds it in the thread
    pool (the lifespan builds it at start-up, so it is usually there already)."""
    url = app.openapi_url
    routes = app.router.routes
    where = next(i for i, r in enumerate(routes) if getattr(r, "path", None) == url)

    async def openapi_json() -> JSONResponse:
        schema = app.openapi_schema
        if schema is None:
            schema = await run_in_threadpool(app.openapi)
        return JSONResponse(schema)

    app.add_api_route(url, openapi_json, include_in_schema=False)
    routes[where] = routes.pop()  # in the place of FastAPI's own


def create_app(
    settings: Settings | None = None,
    *,
    connect_temporal: bool = True,
    observability: Observability | None = None,
) -> FastAPI:
    """The API for `settings` (default: the environment). `connect_temporal=False` keeps
    the app from ever dialling Temporal (tests, offline tools).

    Without `settings` this is the API process itself (`uvicorn … --factory`): it sets up
    its logs (LOG_FORMAT), traces (OTEL_EXPORTER_OTLP_ENDPOINT) and metrics
    (API_METRICS_PORT). Tests pass settings, and an `observability` when they want one."""
    own_process = settings is None and observability is None
    if own_process:
        settings = get_settings()
        observability = Observability.setup(settings, "api", metrics_port=settings.api_metrics_port)
    app = FastAPI(
        title="igny8 API",
        version=_version(),
        description=DESCRIPTION,
        openapi_tags=TAGS,
        docs_url="/docs",
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    app.state.connect_temporal = connect_temporal
    app.state.freeze_heap = own_process  # a test's app must not freeze the test process
    app.state.observability = observability
    app.state.titles = TitleCache()
    install_error_handlers(app)
    wire(app, observability)
    app.include_router(api_router, prefix=API_PREFIX, dependencies=[Depends(bind_path_ids)])
    install_dashboard(app)  # the web dashboard at / (api/dashboard/)
    _with_extra_schemas(app)
    return app


# `uvicorn api.main:app --factory` (or `api.main:create_app --factory`).
app = create_app
