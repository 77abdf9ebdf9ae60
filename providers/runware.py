"""Runware image generation over its HTTP task API.

Runware reports the cost of each task (`includeCost`), which lets billing record what an
image really cost us rather than a price-list estimate.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from providers.base import ImageResult
from providers.errors import classify_http_status, classify_openai_error, make_error
from providers.http import download_image, new_http_client, sniff_mime

PROVIDER_NAME = "Runware"
_MIN_SIDE, _MAX_SIDE, _STEP = 128, 2048, 64


class RunwareProvider:
    """Implements ImageProvider against `POST {base_url}` with a JSON list of tasks."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        timeout_s: float = 120.0,
        *,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._api_key = api_key
        self._http = http_client
        self._owns_http = http_client is None

    async def generate_image(
        self, *, model: str, prompt: str, size: str = "1024x1024"
    ) -> ImageResult:
        """Run one imageInference task, download its image and report Runware's cost."""
        width, height = parse_size(size)
        task_uuid = str(uuid.uuid4())
        task = {
            "taskType": "imageInference",
            "taskUUID": task_uuid,
            "positivePrompt": prompt,
            "model": model,
            "width": width,
            "height": height,
            "numberResults": 1,
            "outputType": "URL",
            "includeCost": True,
        }
        body = await self._post([task])
        entry = _find_entry(body, task_uuid)
        data, mime = await self._entry_bytes(entry)
        return ImageResult(
            data=data,
            mime_type=mime,
            model=model,
            provider_cost_usd=_cost(entry.get("cost")),
            revised_prompt=None,
        )

    async def _post(self, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._api_key}"}
        try:
            response = await self._client().post(self.base_url, json=tasks, headers=headers)
        except httpx.HTTPError as exc:
            raise classify_openai_error(exc, provider=PROVIDER_NAME) from exc
        body = _json_or_text(response)
        if response.status_code >= 400:
            raise classify_http_status(
                response.status_code, body, response.headers, provider=PROVIDER_NAME
            )
        if not isinstance(body, dict):
            raise make_error("bad_response", "Runware returned a body that is not a JSON object")
        if body.get("errors"):
            # Runware can report task errors with HTTP 200; treat them as a 400.
            raise classify_http_status(400, body, response.headers, provider=PROVIDER_NAME)
        return body

    async def _entry_bytes(self, entry: dict[str, Any]) -> tuple[bytes, str]:
        url = entry.get("imageURL")
        if url:
            return await download_image(self._client(), str(url), provider=PROVIDER_NAME)
        encoded = entry.get("imageBase64Data")
        if encoded:
            try:
                data = base64.b64decode(str(encoded), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise make_error("bad_response", "Runware returned invalid base64 data") from exc
            return data, sniff_mime(data)
        raise make_error("bad_response", "Runware returned neither an image URL nor image data")

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = new_http_client(self.timeout_s)
        return self._http

    async def aclose(self) -> None:
        """Close the download client if this provider created it."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None


def parse_size(size: str) -> tuple[int, int]:
    """ "WxH" → Runware dimensions: multiples of 64 within 128..2048, as Runware requires."""
    try:
        width_s, height_s = size.lower().split("x")
        width, height = int(width_s), int(height_s)
    except ValueError as exc:
        raise make_error("invalid_request", f"Image size {size!r} is not WIDTHxHEIGHT") from exc
    if width <= 0 or height <= 0:
        raise make_error("invalid_request", f"Image size {size!r} must be positive")
    return _snap(width), _snap(height)


def _snap(side: int) -> int:
    rounded = round(side / _STEP) * _STEP
    return max(_MIN_SIDE, min(_MAX_SIDE, rounded))


def _find_entry(body: dict[str, Any], task_uuid: str) -> dict[str, Any]:
    entries = [e for e in body.get("data") or [] if isinstance(e, dict)]
    for entry in entries:
        if entry.get("taskUUID") == task_uuid:
            return entry
    if entries:
        return entries[0]
    raise make_error("bad_response", "Runware returned no result for the image task")


def _cost(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
