"""`POST /runware/v1`: Runware's task API (a JSON list of tasks in, `{"data": [...]}` out).

Supports `imageInference` tasks (URL, base64 or data-URI output, with the per-image cost
Runware reports when `includeCost` is set) and an optional `authentication` task.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator import faults
from simulator.faults import Fault
from simulator.pipeline import bearer_key
from simulator.state import SimState

COST_PER_IMAGE_USD = 0.0013
_OUTPUT_TYPES = ("URL", "base64Data", "dataURI")


def _tasks(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict):
        body = [body]
    return [t for t in body if isinstance(t, dict)] if isinstance(body, list) else []


def _inference_tasks(body: Any) -> list[dict[str, Any]]:
    return [t for t in _tasks(body) if t.get("taskType") == "imageInference"]


class RunwareTasks:
    """Runware's single endpoint; errors come back as `{"errors": [...]}`."""

    name = "runware"

    def api_key(self, request: Request, body: Any) -> str | None:
        for task in _tasks(body):
            if task.get("taskType") == "authentication" and task.get("apiKey"):
                return str(task["apiKey"])
        return bearer_key(request)

    def render(self, fault: Fault, body: Any) -> Response:
        tasks = _inference_tasks(body)
        return fault.runware_response(tasks[0].get("taskUUID") if tasks else None)

    def validate(self, body: Any) -> tuple[str, Fault | None]:
        tasks = _tasks(body)
        if not tasks:
            return "", faults.invalid("The request must be a JSON array of tasks.")
        for task in tasks:
            fault = _task_problem(task)
            if fault is not None:
                return "", fault
        return "\n".join(str(t.get("positivePrompt", "")) for t in _inference_tasks(body)), None

    def answer(self, body: Any, request: Request, state: SimState) -> Response:
        base = str(request.base_url).rstrip("/")
        data = []
        for task in _inference_tasks(body):
            data += [
                _result(task, i, base, state) for i in range(int(task.get("numberResults", 1)))
            ]
        state.stats.images_generated += len(data)
        return JSONResponse({"data": data})


def _task_problem(task: dict[str, Any]) -> Fault | None:
    kind = task.get("taskType")
    if kind == "authentication":
        return None
    if kind != "imageInference":
        return faults.invalid(f"Unsupported taskType {kind!r}.", "taskType")
    if not isinstance(task.get("taskUUID"), str) or not task["taskUUID"]:
        return faults.invalid("taskUUID is required.", "taskUUID")
    prompt = task.get("positivePrompt")
    if not isinstance(prompt, str) or len(prompt.strip()) < 2:
        return faults.invalid("positivePrompt must be at least 2 characters.", "positivePrompt")
    if not isinstance(task.get("model"), str) or not task["model"]:
        return faults.invalid("model is required (e.g. 'runware:100@1').", "model")
    return _dimension_problem(task) or _options_problem(task)


def _dimension_problem(task: dict[str, Any]) -> Fault | None:
    for side in ("width", "height"):
        value = task.get(side)
        if not isinstance(value, int) or not 128 <= value <= 2048 or value % 64:
            return faults.invalid(f"{side} must be a multiple of 64 between 128 and 2048.", side)
    return None


def _options_problem(task: dict[str, Any]) -> Fault | None:
    count = task.get("numberResults", 1)
    if not isinstance(count, int) or not 1 <= count <= 20:
        return faults.invalid("numberResults must be between 1 and 20.", "numberResults")
    if task.get("outputType", "URL") not in _OUTPUT_TYPES:
        return faults.invalid(f"outputType must be one of {_OUTPUT_TYPES}.", "outputType")
    return None


def _result(task: dict[str, Any], index: int, base: str, state: SimState) -> dict[str, Any]:
    image = state.images.get_or_draw(
        model=task["model"],
        prompt=task["positivePrompt"],
        width=task["width"],
        height=task["height"],
        longest=state.config.image_size,
        index=index,
    )
    digest = hashlib.sha256(image.name.encode()).digest()
    result: dict[str, Any] = {
        "taskType": "imageInference",
        "taskUUID": task["taskUUID"],
        "imageUUID": str(uuid.UUID(bytes=digest[:16])),
        "seed": int.from_bytes(digest[16:20], "big"),
        "NSFWContent": False,
    }
    output = task.get("outputType", "URL")
    if output == "base64Data":
        result["imageBase64Data"] = image.b64
    elif output == "dataURI":
        result["imageDataURI"] = f"data:image/png;base64,{image.b64}"
    else:
        result["imageURL"] = f"{base}/files/{image.name}"
    if task.get("includeCost"):
        result["cost"] = COST_PER_IMAGE_USD
    return result
