"""A fake WordPress REST API for the failures a real one cannot produce on demand.

The real WordPress (tests/wordpress_fixture.py) proves the client speaks WordPress; this
fake proves what happens when WordPress misbehaves: a 500 on the first create then
success, an answer that comes too late after the post was already made, a site down for
good. It keeps what was created, so a test can count posts and media and see that a
retry made no duplicate.

It serves the routes `providers/wordpress.py` uses, with WordPress's shapes: the REST
index, users/me, media upload (raw body, title and alt text in the query string),
media update and search, posts create, list by slug and get, and the uploaded files.
Routes work at /wp-json/... and, as on sites with plain permalinks, at /?rest_route=/...

Faults are scheduled per route name ("index", "users_me", "upload_media",
"update_media", "list_media", "create_post", "list_posts", "get_post", or "*"):
`fail(route, status)` answers a status without doing anything; `slow(route, delay_s)`
does the work, then answers only after `delay_s`; `down()` answers 503 to everything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import html
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

DEFAULT_USER = "igny8"
DEFAULT_APP_PASSWORD = "abcd EFGH 1234 ijkl MNOP 5678"
ADMIN_CAPS = {"administrator": True, "publish_posts": True, "upload_files": True}


@dataclass
class Fault:
    route: str
    status: int | None = None  # answer this instead of doing the work
    delay_s: float = 0.0  # do the work, then wait this long before answering
    times: int | None = 1  # None: for good
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class FakeState:
    username: str = DEFAULT_USER
    app_password: str = DEFAULT_APP_PASSWORD
    capabilities: dict[str, bool] = field(default_factory=lambda: dict(ADMIN_CAPS))
    pretty_permalinks: bool = True
    posts: list[dict[str, Any]] = field(default_factory=list)
    media: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    next_id: int = 1


class FakeWordPress:
    """The fake in a daemon thread on a free port; `url`, counters, fault controls, `stop()`."""

    def __init__(self, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None) -> None:
        self.state = FakeState()
        self._lock = threading.Lock()
        self._socket = _bind(host)
        port = self._socket.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{port}"
        config = uvicorn.Config(
            self._asgi,
            log_level="warning",
            access_log=False,
            lifespan="off",
            interface="asgi3",
            timeout_graceful_shutdown=1,
            ssl_certfile=str(tls[0]) if tls else None,
            ssl_keyfile=str(tls[1]) if tls else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._tls = tls is not None

    # ----------------------------------------------------------------------- lifecycle

    def start(self, timeout_s: float = 10.0) -> FakeWordPress:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(self._socket.getsockname(), timeout=0.5),
            ):
                if self._server.started:
                    return self
            time.sleep(0.02)
        raise TimeoutError(f"the fake WordPress at {self.url} did not start")

    def stop(self) -> None:
        """Stop serving and close the socket: connections are then refused. Forced: a
        request held by slow() is dropped rather than waited for."""
        self._server.should_exit = self._server.force_exit = True
        if self._thread.is_alive():
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self._socket.close()

    def __enter__(self) -> FakeWordPress:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------- controls

    def fail(self, route: str, status: int, times: int | None = 1, **extra: Any) -> None:
        """Answer `status` (without doing the work) the next `times` calls of `route`."""
        with self._lock:
            self.state.faults.append(Fault(route, status=status, times=times, **extra))

    def slow(self, route: str, delay_s: float, times: int | None = 1) -> None:
        """Do the work of the next `times` calls of `route`, but answer `delay_s` late."""
        with self._lock:
            self.state.faults.append(Fault(route, delay_s=delay_s, times=times))

    def down(self, status: int = 503) -> None:
        """Every request answers `status` from now on."""
        self.fail("*", status, times=None, headers={"Retry-After": "30"})

    @property
    def posts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(post) for post in self.state.posts]

    @property
    def media(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(item) for item in self.state.media]

    def calls(self, route: str) -> int:
        with self._lock:
            return self.state.calls.get(route, 0)

    # ----------------------------------------------------------------------- ASGI

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._respond(request)
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        path = request.url.path
        if path.startswith("/wp-content/uploads/"):
            return self._file(path)
        rest = self._rest_route(request)
        if rest is None:
            return self._post_page(path)
        name, handler, args = self._match(request.method, rest)
        with self._lock:
            self.state.calls[name] = self.state.calls.get(name, 0) + 1
            fault = self._take_fault(name)
        if fault and fault.status is not None:
            body = fault.body if fault.body is not None else _wp_error(fault.status)
            return JSONResponse(body, fault.status, headers=fault.headers)
        response = await handler(request, *args)
        if fault and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        return response

    def _post_page(self, path: str) -> Response:
        """A published post's `link` opens (the demo's calendar links to it): its title,
        featured image and html, as a theme would show them."""
        slug = path.strip("/")
        with self._lock:
            post = next(
                (p for p in self.state.posts if p["slug"] == slug and p["status"] == "publish"),
                None,
            )
            media = {m["id"]: m for m in self.state.media}
        if not slug or post is None:
            return Response("<html><body>Not WordPress here</body></html>", 404)
        featured = media.get(post["featured_media"])
        figure = (
            f'<img src="{featured["source_url"]}" alt="{html.escape(featured["alt_text"])}">'
            if featured
            else ""
        )
        page = (
            f"<!doctype html><html><head><title>{html.escape(post['title']['raw'])}</title>"
            f"</head><body><article><h1>{html.escape(post['title']['raw'])}</h1>{figure}"
            f"{post['content']['raw']}</article></body></html>"
        )
        return HTMLResponse(page)

    def _rest_route(self, request: Request) -> str | None:
        path = request.url.path
        if self.state.pretty_permalinks and (path == "/wp-json" or path.startswith("/wp-json/")):
            return path[len("/wp-json") :] or "/"
        if path == "/" and "rest_route" in request.query_params:
            return request.query_params["rest_route"]
        return None

    def _match(self, method: str, route: str) -> tuple[str, Any, tuple[Any, ...]]:
        route = route.rstrip("/") or "/"
        table = [
            ("GET", r"/", "index", self._index),
            ("GET", r"/wp/v2/users/me", "users_me", self._users_me),
            ("POST", r"/wp/v2/media", "upload_media", self._upload_media),
            ("GET", r"/wp/v2/media", "list_media", self._list_media),
            ("POST", r"/wp/v2/media/(\d+)", "update_media", self._update_media),
            ("POST", r"/wp/v2/posts", "create_post", self._create_post),
            ("GET", r"/wp/v2/posts", "list_posts", self._list_posts),
            ("GET", r"/wp/v2/posts/(\d+)", "get_post", self._get_post),
        ]
        for verb, pattern, name, handler in table:
            found = re.fullmatch(pattern, route)
            if verb == method and found:
                return name, handler, tuple(int(g) for g in found.groups())
        return "unknown", self._no_route, ()

    def _take_fault(self, name: str) -> Fault | None:
        for fault in self.state.faults:
            if fault.route in (name, "*"):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.state.faults.remove(fault)
                return fault
        return None

    # ----------------------------------------------------------------------- auth

    def _authenticated(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        strip = re.compile(r"[^A-Za-z0-9]")
        expected = strip.sub("", self.state.app_password)
        return user == self.state.username and strip.sub("", password) == expected

    # ----------------------------------------------------------------------- handlers

    async def _no_route(self, request: Request) -> Response:
        return JSONResponse(_wp_error(404, "rest_no_route"), 404)

    async def _index(self, request: Request) -> Response:
        return JSONResponse(
            {
                "name": "Fake WordPress",
                "description": "",
                "url": self.url,
                "home": self.url,
                "namespaces": ["oembed/1.0", "wp/v2"],
                "authentication": {"application-passwords": {}},
                "routes": {},
            }
        )

    async def _users_me(self, request: Request) -> Response:
        if not self._authenticated(request):
            return JSONResponse(_wp_error(401, "rest_not_logged_in"), 401)
        user = {"id": 1, "name": self.state.username, "slug": self.state.username}
        if request.query_params.get("context") == "edit":
            user["capabilities"] = dict(self.state.capabilities)
        return JSONResponse(user)

    async def _upload_media(self, request: Request) -> Response:
        if not self._authenticated(request):
            return JSONResponse(_wp_error(401, "rest_cannot_create"), 401)
        data = await request.body()
        match = re.search(r'filename="?([^";]+)"?', request.headers.get("content-disposition", ""))
        if not data or not match:
            return JSONResponse(_wp_error(400, "rest_upload_no_data"), 400)
        with self._lock:
            item = self._add_media(data, match.group(1), request)
        return JSONResponse(item, 201)

    def _add_media(self, data: bytes, filename: str, request: Request) -> dict[str, Any]:
        stem, _, ext = filename.rpartition(".")
        name, n = filename, 1
        while _upload_path(name) in self.state.files:
            name, n = f"{stem}-{n}.{ext}", n + 1
        mime = request.headers.get("content-type", "application/octet-stream")
        self.state.files[_upload_path(name)] = (data, mime)
        title = request.query_params.get("title") or stem
        item = {
            "id": self._new_id(),
            "slug": self._unique_slug(_slugify(title), self.state.media),
            "title": {"raw": title, "rendered": title},
            "alt_text": request.query_params.get("alt_text", ""),
            "mime_type": mime,
            "media_type": "image",
            "source_url": f"{self.url}{_upload_path(name)}",
        }
        self.state.media.append(item)
        return item

    async def _update_media(self, request: Request, media_id: int) -> Response:
        if not self._authenticated(request):
            return JSONResponse(_wp_error(401, "rest_cannot_edit"), 401)
        fields = await request.json()
        with self._lock:
            item = next((m for m in self.state.media if m["id"] == media_id), None)
            if item is None:
                return JSONResponse(_wp_error(404, "rest_post_invalid_id"), 404)
            if "alt_text" in fields:
                item["alt_text"] = fields["alt_text"]
            if "title" in fields:
                item["title"] = {"raw": fields["title"], "rendered": fields["title"]}
            return JSONResponse(dict(item))

    async def _list_media(self, request: Request) -> Response:
        search = request.query_params.get("search", "").lower()
        with self._lock:
            found = [m for m in self.state.media if search in m["title"]["raw"].lower()]
        return JSONResponse(found)

    async def _create_post(self, request: Request) -> Response:
        if not self._authenticated(request):
            return JSONResponse(_wp_error(401, "rest_cannot_create"), 401)
        fields = await request.json()
        if not fields.get("title") and not fields.get("content"):
            return JSONResponse(_wp_error(400, "empty_content"), 400)
        with self._lock:
            slug = self._unique_slug(
                _slugify(fields.get("slug") or fields["title"]), self.state.posts
            )
            post = {
                "id": self._new_id(),
                "slug": slug,
                "status": fields.get("status", "draft"),
                "link": f"{self.url}/{slug}/",
                "title": {"raw": fields.get("title", ""), "rendered": fields.get("title", "")},
                "content": {"raw": fields.get("content", "")},
                "excerpt": {"raw": fields.get("excerpt", "")},
                "featured_media": fields.get("featured_media", 0),
            }
            self.state.posts.append(post)
        return JSONResponse(post, 201)

    async def _list_posts(self, request: Request) -> Response:
        status = request.query_params.get("status", "publish")
        if status != "publish" and not self._authenticated(request):
            return JSONResponse(_wp_error(400, "rest_invalid_param"), 400)
        slug = request.query_params.get("slug")
        with self._lock:
            found = [
                p
                for p in self.state.posts
                if (slug is None or p["slug"] == slug) and status in ("any", p["status"])
            ]
        return JSONResponse(found)

    async def _get_post(self, request: Request, post_id: int) -> Response:
        with self._lock:
            post = next((p for p in self.state.posts if p["id"] == post_id), None)
        if post is None:
            return JSONResponse(_wp_error(404, "rest_post_invalid_id"), 404)
        return JSONResponse(post)

    def _file(self, path: str) -> Response:
        with self._lock:
            found = self.state.files.get(path)
        if found is None:
            return Response(b"", 404)
        return Response(found[0], media_type=found[1])

    # ----------------------------------------------------------------------- helpers

    def _new_id(self) -> int:
        self.state.next_id += 1
        return self.state.next_id

    @staticmethod
    def _unique_slug(slug: str, items: list[dict[str, Any]]) -> str:
        """As WordPress does: a taken slug gets -2, -3, ..."""
        taken = {item["slug"] for item in items}
        candidate, n = slug, 2
        while candidate in taken:
            candidate, n = f"{slug}-{n}", n + 1
        return candidate


def _slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "untitled"


def _upload_path(name: str) -> str:
    today = dt.date.today()
    return f"/wp-content/uploads/{today:%Y}/{today:%m}/{name}"


def _wp_error(status: int, code: str | None = None) -> dict[str, Any]:
    messages = {
        400: "Invalid parameter(s).",
        401: "Sorry, you are not allowed to do that.",
        403: "Sorry, you are not allowed to do that.",
        404: "No route was found matching the URL and request method.",
        429: "Too many requests.",
        500: "There has been a critical error on this website.",
        503: "Service unavailable.",
    }
    return {
        "code": code or f"fake_{status}",
        "message": messages.get(status, f"HTTP {status}"),
        "data": {"status": status},
    }


def _bind(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    return sock


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate no client trusts, for the TLS-failure test: (cert file, key file)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
