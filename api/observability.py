"""The API's side of core.observability: a log context and metrics for every request,
the ids of the path in that context, traces when they are on.

`RequestObservability` is a plain ASGI middleware (no extra task per request): it opens
the request's log context (a request id; the auth dependency adds the account, and
`bind_path_ids` the site, batch or run of the path) and counts the request by its route
template, so `/sites/{site_id}` is one series however many sites there are.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import FastAPI, Request

from core import metrics
from core.logs import bind_log_context, new_log_context, reset_log_context
from core.observability import Observability
from core.tracing import instrument_fastapi

# Path parameters that name what a request is about.
PATH_IDS = ("site_id", "batch_id", "run_id", "content_id", "image_id")


class RequestObservability:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = new_log_context(request_id=uuid.uuid4().hex[:16])
        status = 500
        started = time.perf_counter()

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = route_template(scope)
            method = scope.get("method", "GET")
            metrics.API_REQUESTS.labels(method, route, str(status)).inc()
            metrics.API_SECONDS.labels(method, route).observe(time.perf_counter() - started)
            reset_log_context(token)


def route_template(scope: dict[str, Any]) -> str:
    """`/api/v1/sites/{site_id}` for `/api/v1/sites/12`: the request's path with each path
    parameter's value put back as its name (a route of an included router knows only its
    own part of the path); `unmatched` for a 404 no route took."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    params = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    if any("/" in value for value in params):  # a {path:path} parameter
        return str(getattr(route, "path", "unmatched"))
    segments = []
    for segment in str(scope.get("path", "")).split("/"):
        name = params.pop(segment, None)
        segments.append(f"{{{name}}}" if name else segment)
    return "/".join(segments)


async def bind_path_ids(request: Request) -> None:
    """A dependency of every API route: the path's ids join the request's log lines."""
    ids = {k: v for k, v in request.path_params.items() if k in PATH_IDS}
    if ids:
        bind_log_context(**ids)


def wire(app: FastAPI, obs: Observability | None) -> None:
    """Middleware always (cheap); the server spans when tracing is on."""
    app.add_middleware(RequestObservability)
    if obs is not None and obs.tracer_provider is not None:
        instrument_fastapi(app, obs.tracer_provider)
