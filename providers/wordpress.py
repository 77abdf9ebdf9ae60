"""WordPress REST API client (Application Passwords over HTTP Basic), for publishing.

Every failure becomes one `WordPressError` (a ProviderError) whose `retryable` flag is
what Temporal should do: 5xx, 429, 408, timeouts and dropped connections retry; a wrong
password, a missing permission, a URL that is not WordPress, a rejected request or a bad
certificate do not, since repeating them cannot help. Messages are written for the site
owner who typed the URL and password in, and never contain the application password.

Publishing exactly once (DESIGN §8) needs lookups as well as creates: a create whose
answer never came (a timeout) may have happened, so the caller looks the post up by its
deterministic slug (`find_post_by_slug`, across all statuses) and a media item by its
deterministic title (`find_media`) before creating again.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import httpx

from providers.base import ProviderError
from providers.errors import parse_retry_after

log = logging.getLogger("igny8.wordpress")

# Every code a WordPressError may carry, with whether Temporal should retry it.
WORDPRESS_ERROR_CODES: dict[str, bool] = {
    "auth_error": False,  # 401: wrong user or application password
    "forbidden": False,  # 403: the user may not do this, or a firewall blocks the API
    "not_found": False,  # 404: no REST API at that URL, or no such post / media item
    "not_wordpress": False,  # something answers, but it is not WordPress
    "redirected": False,  # 3xx: the site lives at another address (http→https, www)
    "invalid_request": False,  # other 4xx: WordPress rejected what we sent
    "tls_error": False,  # certificate or TLS handshake failure
    "unreachable": True,  # connection refused, DNS failure, connect timeout
    "connection_error": True,  # the connection dropped mid-request (outcome unknown)
    "timeout": True,  # no answer in time, or 408 (outcome unknown for a create)
    "rate_limited": True,  # 429, with Retry-After when given
    "server_error": True,  # 5xx
    "bad_response": True,  # a 2xx that is not the JSON WordPress sends (PHP notice, proxy)
}


class WordPressError(ProviderError):
    """A classified WordPress failure: `code` (a WORDPRESS_ERROR_CODES key), `message` for
    people, `retryable` for Temporal, `status` (HTTP) and `retry_after` (seconds)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message,
            code=code,
            retryable=WORDPRESS_ERROR_CODES.get(code, True),
            status=status,
            retry_after=retry_after,
        )

    def __repr__(self) -> str:
        return super().__repr__().replace("ProviderError(", "WordPressError(", 1)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Keyword-only arguments defeat Exception's default pickling; spell it out."""
        return (_rebuild_error, (self.code, self.message, self.status, self.retry_after))


def _rebuild_error(
    code: str, message: str, status: int | None, retry_after: float | None
) -> WordPressError:
    return WordPressError(code, message, status=status, retry_after=retry_after)


@dataclass(frozen=True)
class Site:
    """What check() learned: the site's name and address and who the password belongs to."""

    name: str
    home: str
    user_id: int
    user_name: str


@dataclass(frozen=True)
class Media:
    id: int
    source_url: str
    alt_text: str = ""


@dataclass(frozen=True)
class Post:
    id: int
    link: str
    slug: str
    status: str


def normalise_base_url(url: str) -> str:
    """What people paste: 'example.com', 'https://example.com/', '.../wp-json/'."""
    url = url.strip()
    if not re.match(r"^[a-z][a-z0-9+.-]*://", url, re.IGNORECASE):
        url = "https://" + url
    url = url.rstrip("/")
    if url.lower().endswith("/wp-json"):
        url = url[: -len("/wp-json")]
    return url


class WordPressClient:
    """One site's REST API. Pass `http` to share a pooled client (it is then not closed)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        app_password: str,
        timeout_s: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = normalise_base_url(base_url)
        self.username = username
        self._auth = httpx.BasicAuth(username, app_password)
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self.timeout_s = timeout_s
        self._http = http or httpx.AsyncClient()
        self._owns_http = http is None
        self._query_routes = False  # set by check() when only /?rest_route= works

    def __repr__(self) -> str:
        return f"WordPressClient({self.base_url!r}, user={self.username!r})"

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> WordPressClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ----------------------------------------------------------------------- check

    async def check(self) -> Site:
        """Is this WordPress, does the password work, may the user publish and upload?"""
        index = await self._discover()
        me = await self._json_of(
            "GET", "/wp/v2/users/me", "checking the login", params={"context": "edit"}
        )
        self._require_capabilities(me)
        return Site(
            name=str(index.get("name") or ""),
            home=str(index.get("home") or index.get("url") or self.base_url),
            user_id=int(me.get("id") or 0),
            user_name=str(me.get("name") or me.get("slug") or self.username),
        )

    async def _discover(self) -> dict[str, Any]:
        """The REST index at /wp-json/, else at /?rest_route=/ (sites on plain permalinks)."""
        what = "reading the REST API index"
        pretty = await self._send("GET", f"{self.base_url}/wp-json/", what)
        if pretty.status_code == 404:
            fallback = await self._send(
                "GET", f"{self.base_url}/", what, params={"rest_route": "/"}
            )
            if fallback.status_code == 200 and _is_rest_index(_json_or_none(fallback)):
                self._query_routes = True
                return _json_or_none(fallback) or {}
            if _looks_like_wordpress(pretty) or _looks_like_wordpress(fallback):
                raise WordPressError("not_found", self._no_rest_message(), status=404)
            raise WordPressError("not_wordpress", self._not_wordpress_message(404), status=404)
        self._raise_for_status(pretty, what)
        body = _json_or_none(pretty)
        if not _is_rest_index(body):
            raise WordPressError("not_wordpress", self._not_wordpress_message(200))
        return body or {}

    def _require_capabilities(self, me: dict[str, Any]) -> None:
        caps = me.get("capabilities")
        if not isinstance(caps, dict):
            return  # not shown to this user: the first publish will tell
        missing = [cap for cap in ("publish_posts", "upload_files") if not caps.get(cap)]
        if missing:
            raise WordPressError(
                "forbidden",
                f"The WordPress user '{self.username}' may not {' or '.join(missing)}; "
                "give it the Author role or higher",
                status=403,
            )

    # ----------------------------------------------------------------------- media

    async def upload_media(
        self,
        data: bytes,
        filename: str,
        mime: str,
        alt_text: str = "",
        title: str | None = None,
    ) -> Media:
        """Upload an image; `title` (default: the file name without extension) is what
        `find_media` looks for when this call's outcome is unknown, so make it unique.

        Title and alt text ride on the upload itself (WordPress reads them from the query
        string), so there is no moment where the item exists without them; should a
        WordPress ignore the alt text, it is set with a second request.
        """
        name = safe_filename(filename, mime)
        params = {"title": title or PurePosixPath(name).stem}
        if alt_text:
            params["alt_text"] = alt_text
        headers = {"Content-Type": mime, "Content-Disposition": f'attachment; filename="{name}"'}
        body = await self._json_of(
            "POST",
            "/wp/v2/media",
            f"uploading {name}",
            params=params,
            content=data,
            headers=headers,
        )
        media = _media(body)
        if alt_text and not media.alt_text:
            media = await self.update_media(media.id, alt_text=alt_text)
        return media

    async def update_media(
        self, media_id: int, *, alt_text: str | None = None, title: str | None = None
    ) -> Media:
        """Set alt text and/or title on an existing media item."""
        fields = {k: v for k, v in (("alt_text", alt_text), ("title", title)) if v is not None}
        body = await self._json_of(
            "POST", f"/wp/v2/media/{int(media_id)}", f"updating media {media_id}", json=fields
        )
        return _media(body)

    async def find_media(self, title: str) -> Media | None:
        """The oldest media item titled exactly `title`, or None (after an unknown outcome)."""
        params = {
            "search": title,
            "context": "edit",
            "per_page": 100,
            "orderby": "id",
            "order": "asc",
        }
        items = await self._json_of(
            "GET", "/wp/v2/media", f"looking up media '{title}'", params=params
        )
        for item in _as_list(items):
            if _title_of(item) == title:
                return _media(item)
        return None

    # ----------------------------------------------------------------------- posts

    async def create_post(
        self,
        title: str,
        content: str,
        slug: str,
        excerpt: str = "",
        featured_media: int | None = None,
        status: str = "publish",
        categories: list[int] | None = None,
        tags: list[int] | None = None,
    ) -> Post:
        """Create a post. Not idempotent by itself: after a failure whose outcome is
        unknown (timeout, dropped connection, 5xx), call find_post_by_slug first."""
        fields: dict[str, Any] = {
            "title": title,
            "content": content,
            "slug": slug,
            "status": status,
            "excerpt": excerpt,
        }
        if featured_media:
            fields["featured_media"] = int(featured_media)
        if categories:
            fields["categories"] = categories
        if tags:
            fields["tags"] = tags
        body = await self._json_of("POST", "/wp/v2/posts", f"creating post '{slug}'", json=fields)
        return _post(body)

    async def find_post_by_slug(self, slug: str) -> Post | None:
        """The oldest post with this slug in any status (drafts and scheduled too), or None."""
        params = {
            "slug": slug,
            "status": "any",
            "context": "edit",
            "per_page": 100,
            "orderby": "id",
            "order": "asc",
        }
        items = await self._json_of(
            "GET", "/wp/v2/posts", f"looking up post '{slug}'", params=params
        )
        posts = [_post(item) for item in _as_list(items)]
        return posts[0] if posts else None

    async def get_post(self, post_id: int) -> Post | None:
        """A post by id, or None if WordPress has no such post (deleted, or never made)."""
        try:
            body = await self._json_of(
                "GET",
                f"/wp/v2/posts/{int(post_id)}",
                f"reading post {post_id}",
                params={"context": "edit"},
            )
        except WordPressError as exc:
            if exc.status == 404:
                return None
            raise
        return _post(body)

    # ----------------------------------------------------------------------- HTTP

    async def _json_of(self, method: str, route: str, what: str, **kwargs: Any) -> Any:
        url, params = self._route(route, kwargs.pop("params", None))
        response = await self._send(method, url, what, params=params, **kwargs)
        self._raise_for_status(response, what)
        body = _json_or_none(response)
        if body is None:
            raise WordPressError(
                "bad_response",
                f"WordPress answered something that is not JSON while {what} "
                f"(HTTP {response.status_code}; a PHP error or a plugin's output?)",
                status=response.status_code,
            )
        return body

    def _route(self, route: str, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        if self._query_routes:
            return f"{self.base_url}/", {"rest_route": route, **(params or {})}
        return f"{self.base_url}/wp-json{route}", dict(params or {})

    async def _send(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        """One request, authenticated; transport failures become WordPressError here.
        Redirects are not followed: a POST redirected becomes a GET and creates nothing."""
        started = time.monotonic()
        try:
            response = await self._http.request(
                method,
                url,
                auth=self._auth,
                timeout=self._timeout,
                follow_redirects=False,
                **kwargs,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._transport_error(exc, what) from exc
        log.debug(
            "%s %s → %s in %.0f ms",
            method,
            url,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response

    def _transport_error(self, exc: Exception, what: str) -> WordPressError:
        site = self.base_url
        if isinstance(exc, httpx.ConnectTimeout):
            return WordPressError(
                "unreachable",
                f"WordPress at {site} is unreachable: no connection within "
                f"{self._timeout.connect:.0f} s ({what})",
            )
        if isinstance(exc, httpx.TimeoutException):
            return WordPressError(
                "timeout",
                f"WordPress at {site} did not answer within {self.timeout_s:g} s "
                f"({what}); it may still have done it",
            )
        if isinstance(exc, httpx.ConnectError):
            return _connect_error(exc, site, what)
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return WordPressError("invalid_request", f"'{site}' is not a valid site address")
        return WordPressError(
            "connection_error",
            f"The connection to WordPress at {site} dropped ({what}): {_cause_text(exc)}",
        )

    def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 300:
            return
        code, detail = _wp_error(response)
        suffix = f" [{code}: {detail}]" if code or detail else ""
        if 300 <= status < 400:
            where = response.headers.get("location", "another address")
            raise WordPressError(
                "redirected",
                f"WordPress at {self.base_url} redirects to {where} ({status}); "
                "use that address as the site URL",
                status=status,
            )
        raise self._status_error(status, what, suffix, response.headers)

    def _status_error(
        self, status: int, what: str, suffix: str, headers: httpx.Headers
    ) -> WordPressError:
        retry_after = parse_retry_after(headers)
        if status == 401:
            return WordPressError("auth_error", self._auth_message(suffix), status=status)
        if status == 403:
            return WordPressError(
                "forbidden",
                f"WordPress refused user '{self.username}' (403) while {what}{suffix}: the user "
                "needs a role that can publish posts and upload files, and no security "
                "plugin or firewall may block the REST API",
                status=status,
            )
        if status == 404:
            return WordPressError(
                "not_found", f"WordPress answered 404 while {what}{suffix}", status=status
            )
        if status == 408:
            return WordPressError(
                "timeout", f"WordPress timed out (408) while {what}", status=status
            )
        if status == 429:
            wait = f"retry after {retry_after:g} s" if retry_after is not None else "retry later"
            return WordPressError(
                "rate_limited",
                f"WordPress rate-limited us while {what}; {wait}",
                status=status,
                retry_after=retry_after,
            )
        if status >= 500:
            return WordPressError(
                "server_error",
                f"WordPress had a server error ({status}) while {what}{suffix}",
                status=status,
                retry_after=retry_after,
            )
        return WordPressError(
            "invalid_request",
            f"WordPress rejected the request ({status}) while {what}{suffix}",
            status=status,
        )

    def _auth_message(self, suffix: str = "") -> str:
        message = (
            f"WordPress rejected the username '{self.username}' or its application password "
            f"(401){suffix}. Use an Application Password (Users → Profile → Application Passwords), "
            "not the login password"
        )
        if self.base_url.startswith("http://"):
            message += (
                "; over plain HTTP WordPress accepts application passwords only when its "
                "environment type is 'local'"
            )
        return message + "; some hosts also strip the Authorization header"

    def _no_rest_message(self) -> str:
        return (
            f"WordPress is at {self.base_url}, but its REST API is not (404 at /wp-json/ "
            "and /?rest_route=/): a plugin may disable it, or the address may be wrong"
        )

    def _not_wordpress_message(self, status: int) -> str:
        return (
            f"{self.base_url} is not WordPress: /wp-json/ answered {status} without the "
            "WordPress REST API index; check the site address"
        )


# --------------------------------------------------------------------------- helpers


def safe_filename(filename: str, mime: str) -> str:
    """ASCII, no quotes or slashes (it goes into a header), with an extension WordPress
    accepts for the type (it refuses uploads whose extension it does not know)."""
    stem, dot, ext = PurePosixPath(filename.replace("\\", "/")).name.rpartition(".")
    if not dot:
        stem, ext = ext, ""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "image"
    ext = re.sub(r"[^A-Za-z0-9]", "", ext).lower() or _EXTENSIONS.get(mime, "png")
    return f"{stem}.{ext}"


_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}


def _connect_error(exc: httpx.ConnectError, site: str, what: str) -> WordPressError:
    text = _cause_text(exc)
    if _has_cause(exc, ssl.SSLError) or "certificate" in text.lower() or "ssl" in text.lower():
        return WordPressError(
            "tls_error",
            f"The TLS connection to {site} failed ({what}): {text}. The certificate may be "
            "self-signed, expired or for another name",
        )
    if _has_cause(exc, socket.gaierror):
        reason = "its host name does not resolve"
    elif _has_cause(exc, ConnectionRefusedError):
        reason = "connection refused (nothing listens there)"
    else:
        reason = text
    return WordPressError("unreachable", f"WordPress at {site} is unreachable: {reason} ({what})")


def _has_cause(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _cause_text(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or str(cause or "") or type(cause or exc).__name__
    return " ".join(text.split())[:200]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _is_rest_index(body: Any) -> bool:
    return isinstance(body, dict) and "wp/v2" in (body.get("namespaces") or [])


def _looks_like_wordpress(response: httpx.Response) -> bool:
    """A WordPress whose REST API is off still gives itself away in headers or HTML."""
    if "api.w.org" in response.headers.get("link", ""):
        return True
    text = response.text[:20000]
    return "/wp-content/" in text or "/wp-includes/" in text or '"code":"rest_' in text


def _wp_error(response: httpx.Response) -> tuple[str, str]:
    """WordPress's `{"code", "message"}` error body, shortened; ('', '') if not that."""
    body = _json_or_none(response)
    if isinstance(body, dict):
        return str(body.get("code") or ""), " ".join(str(body.get("message") or "").split())[:300]
    return "", ""


def _as_list(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, list):
        raise WordPressError("bad_response", "WordPress answered a list request with no list")
    return [item for item in body if isinstance(item, dict)]


def _title_of(item: dict[str, Any]) -> str:
    title = item.get("title")
    if isinstance(title, dict):
        return str(title.get("raw") if title.get("raw") is not None else title.get("rendered", ""))
    return str(title or "")


def _media(body: Any) -> Media:
    if not isinstance(body, dict) or "id" not in body or "source_url" not in body:
        raise WordPressError("bad_response", "WordPress answered without a media id and URL")
    return Media(int(body["id"]), str(body["source_url"]), str(body.get("alt_text") or ""))


def _post(body: Any) -> Post:
    if not isinstance(body, dict) or "id" not in body:
        raise WordPressError("bad_response", "WordPress answered without a post id")
    return Post(
        int(body["id"]),
        str(body.get("link") or ""),
        str(body.get("slug") or ""),
        str(body.get("status") or ""),
    )
