"""OpenAI (or any OpenAI-compatible server, including the simulator) through the official SDK.

The SDK is built with `max_retries=0`: Temporal is the one retry layer, so a 429 is never
retried twice over and every retry is visible in the workflow history.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai

from core.tracing import client_span
from providers.base import ImageResult, ProviderError, TextResult
from providers.errors import classify_openai_error, make_error
from providers.http import download_image, new_http_client, sniff_mime
from providers.jsonschema_lite import validate

PROVIDER_NAME = "OpenAI"


class OpenAIProvider:
    """Implements TextProvider and ImageProvider over `openai.AsyncOpenAI`."""

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 120.0,
        *,
        http_client: httpx.AsyncClient | None = None,
        image_response_format: str | None = None,
    ) -> None:
        """`image_response_format` ("url"/"b64_json") is only for models that accept it
        (dall-e-*); GPT image models reject the parameter, so by default it is not sent."""
        if not api_key:
            raise make_error("auth_error", "No OpenAI API key is configured; set OPENAI_API_KEY")
        self.base_url = base_url
        self.timeout_s = timeout_s
        # aiohttp under the SDK (its `aiohttp` extra): measured at half the CPU per call
        # of the default httpx pool, which checks every idle connection on each request
        # (bench/provider_http.py); the calls are the workers' largest CPU cost.
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=timeout_s,
            http_client=openai.DefaultAioHttpClient(timeout=timeout_s),
        )
        self._http = http_client
        self._owns_http = http_client is None
        self._image_format = image_response_format

    # ------------------------------------------------------------------ text

    async def complete_json(
        self,
        *,
        model: str,
        system: str,
        prompt: str,
        schema_name: str,
        schema: dict[str, Any],
        max_output_tokens: int | None = None,
    ) -> TextResult:
        """One chat completion with strict structured output, parsed and schema-checked."""
        extra: dict[str, Any] = {}
        if max_output_tokens:
            extra["max_completion_tokens"] = max_output_tokens
        try:
            with self._span("chat/completions"):
                response = await self._client.chat.completions.create(
                    model=model,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": prompt},
                    ],
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": schema_name, "schema": schema, "strict": True},
                    },
                    **extra,
                )
        except Exception as exc:
            raise classify_openai_error(exc, provider=PROVIDER_NAME) from exc
        return _text_result(response, model, schema, system + prompt)

    # ------------------------------------------------------------------ images

    async def generate_image(
        self, *, model: str, prompt: str, size: str = "1024x1024"
    ) -> ImageResult:
        """Generate one image; base64 answers are decoded, URL answers downloaded at once."""
        extra: dict[str, Any] = {}
        if self._image_format:
            extra["response_format"] = self._image_format
        try:
            with self._span("images/generations"):
                response = await self._client.images.generate(
                    model=model,
                    prompt=prompt,
                    size=size,
                    n=1,
                    **extra,  # type: ignore[arg-type]
                )
        except Exception as exc:
            raise classify_openai_error(exc, provider=PROVIDER_NAME) from exc
        if not response.data:
            raise make_error("bad_response", "OpenAI returned no image")
        item = response.data[0]
        data, mime = await self._image_bytes(item.b64_json, item.url)
        return ImageResult(
            data=data,
            mime_type=mime,
            model=model,
            provider_cost_usd=None,
            revised_prompt=item.revised_prompt,
        )

    async def _image_bytes(self, b64_json: str | None, url: str | None) -> tuple[bytes, str]:
        if b64_json:
            try:
                data = base64.b64decode(b64_json, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise make_error(
                    "bad_response", "OpenAI returned invalid base64 image data"
                ) from exc
            return data, sniff_mime(data)
        if url:
            return await download_image(self._http_client(), url, provider=PROVIDER_NAME)
        raise make_error("bad_response", "OpenAI returned neither image data nor a URL")

    @contextmanager
    def _span(self, path: str) -> Iterator[None]:
        """The call's client span (tracing on), with the status the provider answered."""
        with client_span("POST", f"{self._client.base_url}{path}") as span:
            try:
                yield
            except openai.APIStatusError as exc:
                if span is not None:
                    span.set_attribute("http.response.status_code", exc.status_code)
                raise
            if span is not None:
                span.set_attribute("http.response.status_code", 200)

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = new_http_client(self.timeout_s)
        return self._http

    async def aclose(self) -> None:
        """Close the SDK's connection pool and, if we created it, the download client."""
        await self._client.close()
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None


def _text_result(response: Any, model: str, schema: dict[str, Any], sent: str) -> TextResult:
    """Pull the JSON object and token usage out of a chat completion, or explain why not."""
    if not response.choices:
        raise make_error("bad_response", "OpenAI returned no choices")
    choice = response.choices[0]
    refusal = getattr(choice.message, "refusal", None)
    if refusal or choice.finish_reason == "content_filter":
        raise make_error("content_policy", "OpenAI refused the prompt under its content policy")
    if choice.finish_reason == "length":
        raise make_error(
            "bad_response", "OpenAI stopped at the output token limit (answer cut off)"
        )
    raw = choice.message.content or ""
    data = _parse_json_object(raw, schema)
    input_tokens, output_tokens = _usage(response.usage, sent, raw)
    return TextResult(
        data=data,
        raw=raw,
        model=response.model or model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def _parse_json_object(raw: str, schema: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise make_error("bad_response", f"OpenAI returned text that is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise make_error("bad_response", "OpenAI returned JSON that is not an object")
    problems = validate(data, schema)
    if problems:
        raise _schema_error(problems)
    return data


def _schema_error(problems: list[str]) -> ProviderError:
    shown = "; ".join(problems[:3])
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return make_error("bad_response", f"OpenAI output does not match the schema: {shown}{more}")


def _usage(usage: Any, sent: str, raw: str) -> tuple[int, int]:
    """Reported usage; estimate (~4 chars/token) only if a compatible server omits it."""
    if usage is not None:
        return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
    return max(1, len(sent) // 4), max(1, len(raw) // 4)
