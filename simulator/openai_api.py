"""OpenAI-shaped endpoints: chat completions, image generations and the model list.

Response shapes follow the public API closely enough for the official SDK to parse them,
which is the point: the same client code runs against the simulator and against OpenAI.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator import faults
from simulator.faults import Fault
from simulator.images import parse_size
from simulator.pipeline import bearer_key
from simulator.state import MALFORMED_MARKER, SimState
from simulator.textgen import generate

MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-5-mini",
    "gpt-image-1",
    "dall-e-3",
    "dall-e-2",
)
_ids = itertools.count(1)


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class ChatCompletions:
    """`POST /v1/chat/completions` with strict JSON-schema answers."""

    name = "chat.completions"

    def api_key(self, request: Request, body: Any) -> str | None:
        return bearer_key(request)

    def render(self, fault: Fault, body: Any) -> Response:
        return fault.openai_response()

    def validate(self, body: Any) -> tuple[str, Fault | None]:
        if not isinstance(body, dict):
            return "", faults.invalid("The request body must be a JSON object.")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "", faults.invalid("you must provide a model parameter", "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "", faults.invalid("'messages' must be a non-empty array.", "messages")
        if not all(isinstance(m, dict) for m in messages):
            return "", faults.invalid("Each message must be an object.", "messages")
        return "\n".join(_message_text(m) for m in messages), None

    def answer(self, body: Any, request: Request, state: SimState) -> Response:
        system, user, everything = _split_messages(body["messages"])
        schema_name, schema = _schema_of(body.get("response_format"))
        content = json.dumps(generate(schema_name, system, user, schema), ensure_ascii=False)
        if MALFORMED_MARKER in everything.lower():
            state.stats.malformed_answers += 1
            content = _malformed(content)
        prompt_tokens = max(1, len(everything) // 4)
        content, completion_tokens, finish = _apply_limit(content, _token_limit(body))
        state.stats.completions += 1
        state.stats.prompt_tokens += prompt_tokens
        state.stats.completion_tokens += completion_tokens
        return JSONResponse(
            _completion(body["model"], content, finish, prompt_tokens, completion_tokens)
        )


def _malformed(content: str) -> str:
    """What a model sometimes does in the field: chatter before the JSON, cut short."""
    return "Sure! Here is the JSON you asked for:\n" + content[: max(1, len(content) // 2)]


def _split_messages(messages: list[Any]) -> tuple[str, str, str]:
    system = "\n".join(
        _message_text(m) for m in messages if m.get("role") in ("system", "developer")
    )
    user = "\n".join(_message_text(m) for m in messages if m.get("role") == "user")
    return system, user, "\n".join(_message_text(m) for m in messages)


def _schema_of(response_format: Any) -> tuple[str, dict[str, Any] | None]:
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        return str(spec.get("name") or ""), spec.get("schema")
    return "", None


def _token_limit(body: dict[str, Any]) -> int | None:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return limit if isinstance(limit, int) and limit > 0 else None


def _apply_limit(content: str, limit: int | None) -> tuple[str, int, str]:
    """A model that hits max tokens stops mid-answer: cut the text, finish_reason 'length'."""
    tokens = max(1, len(content) // 4)
    if limit is None or tokens <= limit:
        return content, tokens, "stop"
    return content[: limit * 4], limit, "length"


def _completion(
    model: str, content: str, finish: str, prompt: int, completion: int
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-sim{next(_ids):010d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_igny8_simulator",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class ImageGenerations:
    """`POST /v1/images/generations`: base64 by default, a /files/ URL on request."""

    name = "images.generations"

    def api_key(self, request: Request, body: Any) -> str | None:
        return bearer_key(request)

    def render(self, fault: Fault, body: Any) -> Response:
        return fault.openai_response()

    def validate(self, body: Any) -> tuple[str, Fault | None]:
        if not isinstance(body, dict):
            return "", faults.invalid("The request body must be a JSON object.")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return "", faults.invalid("'prompt' is a required property.", "prompt")
        if parse_size(body.get("size")) is None:
            return "", faults.invalid(f"Invalid size {body.get('size')!r}.", "size")
        n = body.get("n", 1)
        if n is not None and (not isinstance(n, int) or not 1 <= n <= 10):
            return "", faults.invalid("'n' must be between 1 and 10.", "n")
        if body.get("response_format") not in (None, "url", "b64_json"):
            return "", faults.invalid(
                "'response_format' must be 'url' or 'b64_json'.", "response_format"
            )
        return prompt, None

    def answer(self, body: Any, request: Request, state: SimState) -> Response:
        width, height = parse_size(body.get("size")) or (1024, 1024)
        as_url = body.get("response_format") == "url"
        base = str(request.base_url).rstrip("/")
        data = []
        for index in range(body.get("n") or 1):
            image = state.images.get_or_draw(
                model=str(body.get("model") or "gpt-image-1"),
                prompt=body["prompt"],
                width=width,
                height=height,
                longest=state.config.image_size,
                index=index,
            )
            item = {"url": f"{base}/files/{image.name}"} if as_url else {"b64_json": image.b64}
            item["revised_prompt"] = body["prompt"]
            data.append(item)
        state.stats.images_generated += len(data)
        return JSONResponse({"created": int(time.time()), "data": data})


def models_response() -> dict[str, Any]:
    created = 1_700_000_000
    data = [
        {"id": m, "object": "model", "created": created, "owned_by": "igny8-simulator"}
        for m in MODELS
    ]
    return {"object": "list", "data": data}
