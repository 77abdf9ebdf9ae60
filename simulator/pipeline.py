"""The request pipeline shared by chat, images and Runware, in the documented order:

auth → insufficient quota → concurrency limit → random 429/500/hang → request validation →
content policy → latency → answer. Keeping the order in one place is what makes fault
tests predictable: e.g. a bad key is always a 401, even when the server is saturated.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from simulator import faults
from simulator.faults import Fault
from simulator.state import SimState


class Endpoint(Protocol):
    """What an API endpoint plugs into the pipeline."""

    name: str

    def api_key(self, request: Request, body: Any) -> str | None: ...

    def validate(self, body: Any) -> tuple[str, Fault | None]:
        """(text to screen for the content policy, or a 400 fault)."""
        ...

    def render(self, fault: Fault, body: Any) -> Response: ...

    def answer(self, body: Any, request: Request, state: SimState) -> Response: ...


async def guarded(state: SimState, request: Request, endpoint: Endpoint) -> Response:
    """Run one request through the fault pipeline, keeping the in-flight count exact."""
    arrived = asyncio.get_running_loop().time()
    arrived_wall = time.time()
    state.stats.requests[endpoint.name] += 1
    body, bad_json = await read_json(request)
    fault = state.gate(endpoint.api_key(request, body))
    if fault is not None:
        return endpoint.render(fault, body)
    try:
        fault = await state.random_fault() or _checked(state, endpoint, body, bad_json)
        if fault is not None:
            return endpoint.render(fault, body)
        # Latency is the provider's whole service time: its own work (drawing the image,
        # writing the article) happens inside it, not after it.
        response = endpoint.answer(body, request, state)
        await state.latency(since=arrived)
        state.served(endpoint.name, arrived_wall, time.time())
        return response
    finally:
        state.leave()


def _checked(
    state: SimState, endpoint: Endpoint, body: Any, bad_json: Fault | None
) -> Fault | None:
    if bad_json is not None:
        return state.invalid(bad_json)
    prompt_text, fault = endpoint.validate(body)
    if fault is not None:
        return state.invalid(fault)
    return state.policy(prompt_text)


async def read_json(request: Request) -> tuple[Any, Fault | None]:
    raw = await request.body()
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError):
        return None, faults.invalid("The request body is not valid JSON.", code=None)


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
