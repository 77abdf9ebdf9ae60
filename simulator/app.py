"""The simulator as a Starlette app: an OpenAI- and Runware-compatible server plus controls.

Plain Starlette rather than FastAPI keeps per-request overhead low enough for hundreds of
image requests per second on one core. `/_sim/*` lets tests and benchmarks change faults
at runtime and read counters without restarting the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator import faults
from simulator.config import SimConfig
from simulator.openai_api import ChatCompletions, ImageGenerations, models_response
from simulator.pipeline import Endpoint, bearer_key, guarded, read_json
from simulator.runware_api import RunwareTasks
from simulator.state import SimState

Handler = Callable[[Request], Awaitable[Response]]


def create_app(config: SimConfig | None = None) -> Starlette:
    """A fresh simulator with its own state, so several can run side by side."""
    state = SimState(config or SimConfig())
    routes = [
        _api_route("/v1/chat/completions", ChatCompletions(), state),
        _api_route("/v1/images/generations", ImageGenerations(), state),
        _api_route("/runware/v1", RunwareTasks(), state),
        Route("/v1/models", _models(state), methods=["GET"]),
        Route("/files/{name}", _files(state), methods=["GET"]),
        Route("/_sim/config", _config(state), methods=["GET", "POST"]),
        Route("/_sim/stats", _stats(state), methods=["GET"]),
        Route("/_sim/reset", _reset(state), methods=["POST"]),
        Route("/_sim/timeline", _timeline(state), methods=["GET"]),
        Route("/health", _health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.sim = state
    return app


def _api_route(path: str, endpoint: Endpoint, state: SimState) -> Route:
    async def handle(request: Request) -> Response:
        return await guarded(state, request, endpoint)

    return Route(path, handle, methods=["POST"], name=endpoint.name)


def _models(state: SimState) -> Handler:
    async def handle(request: Request) -> Response:
        state.stats.requests["models"] += 1
        key = bearer_key(request)
        if not key or key.startswith("sk-invalid"):
            state.stats.auth_failures += 1
            return faults.auth_fault().openai_response()
        return JSONResponse(models_response())

    return handle


def _files(state: SimState) -> Handler:
    async def handle(request: Request) -> Response:
        state.stats.requests["files"] += 1
        image = state.images.file(request.path_params["name"])
        if image is None:
            return faults.not_found("GET", request.url.path).openai_response()
        headers = {"Cache-Control": "public, max-age=3600"}
        return Response(image.png, media_type="image/png", headers=headers)

    return handle


def _config(state: SimState) -> Handler:
    async def handle(request: Request) -> Response:
        if request.method == "POST":
            changes, bad_json = await read_json(request)
            if bad_json is not None or not isinstance(changes, dict):
                return faults.invalid("Send a JSON object of SimConfig fields.").openai_response()
            try:
                state.configure(changes)
            except ValueError as exc:
                return faults.invalid(str(exc)).openai_response()
        return JSONResponse(state.config.as_dict())

    return handle


def _stats(state: SimState) -> Handler:
    async def handle(request: Request) -> Response:
        return JSONResponse(state.stats.as_dict(state.in_flight))

    return handle


def _timeline(state: SimState) -> Handler:
    """Answered requests as {endpoint, arrived, left} in wall-clock seconds, oldest first."""

    async def handle(request: Request) -> Response:
        rows = [{"endpoint": e, "arrived": a, "left": lft} for e, a, lft in state.timeline]
        return JSONResponse({"requests": rows})

    return handle


def _reset(state: SimState) -> Handler:
    async def handle(request: Request) -> Response:
        restore = request.query_params.get("config", "").lower() in ("1", "true", "yes")
        state.reset(restore_config=restore)
        stats = state.stats.as_dict(state.in_flight)
        return JSONResponse({"stats": stats, "config": state.config.as_dict()})

    return handle


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown URLs and wrong methods answer in OpenAI's error shape, as the real API does."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return faults.not_found(request.method, request.url.path).openai_response()
    return faults.method_not_allowed(request.method, request.url.path, status).openai_response()
