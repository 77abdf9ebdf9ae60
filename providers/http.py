"""Shared httpx plumbing: one pooled client per process and an image download helper.

Provider image URLs expire (OpenAI's after an hour), so images are downloaded the moment
they are generated; a single pooled client keeps that cheap at hundreds of images/s.
"""

from __future__ import annotations

import httpx

from providers.base import ProviderError
from providers.errors import classify_http_status, classify_openai_error, make_error

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def new_http_client(timeout_s: float) -> httpx.AsyncClient:
    """A pooled client sized for many concurrent image downloads; no I/O until used."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 15.0)),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        follow_redirects=True,
    )


def sniff_mime(data: bytes, header: str | None = None) -> str:
    """Trust the bytes over the Content-Type header; fall back to PNG, what providers send."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if header and header.startswith("image/"):
        return header.split(";")[0].strip()
    return "image/png"


async def download_image(
    client: httpx.AsyncClient, url: str, *, provider: str
) -> tuple[bytes, str]:
    """GET an image URL; failures are classified like any other provider failure."""
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        raise classify_openai_error(exc, provider=provider) from exc
    if response.status_code != 200:
        raise _download_error(response, provider)
    if not response.content:
        raise make_error("bad_response", f"{provider} returned an empty image file")
    return response.content, sniff_mime(response.content, response.headers.get("content-type"))


def _download_error(response: httpx.Response, provider: str) -> ProviderError:
    error = classify_http_status(
        response.status_code, response.text, response.headers, provider=provider
    )
    if response.status_code in (403, 404, 410):
        # An expired or missing image URL is not a key problem; generating again fixes it.
        return make_error(
            "bad_response",
            f"The {provider} image URL could not be downloaded ({response.status_code})",
            status=response.status_code,
        )
    return error
