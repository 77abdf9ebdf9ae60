"""A small HTTP server for operators, beside a process's real work: `/metrics` (igny8's
metrics plus the Temporal SDK's, one scrape target per process) and the health probes
`/health/live` and `/health/ready` (200 or 503 with a JSON body saying why).

It runs in a daemon thread, so a busy or stuck event loop cannot stop it answering: that
is what liveness measures (the loop's heartbeat, see `WorkerHealth`).

The Temporal SDK serves its metrics itself (Rust core, PrometheusConfig) on a private
loopback port; `/metrics` appends that page to igny8's, so Prometheus scrapes one port.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from core.metrics import CONTENT_TYPE, exposition

log = logging.getLogger("igny8.ops")

# (ok, details) of a probe.
Probe = Callable[[], tuple[bool, dict[str, Any]]]


class OpsServer:
    """Serves `/metrics` when `metrics` is set, the probes when given, on host:port."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: bool = True,
        sdk_metrics_url: str | None = None,
        live: Probe | None = None,
        ready: Probe | None = None,
    ) -> None:
        self.metrics = metrics
        self.sdk_metrics_url = sdk_metrics_url
        self.live = live
        self.ready = ready
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"ops-http-{port}", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("serving %s on port %d", self.describe(), self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def describe(self) -> str:
        parts = ["/metrics"] if self.metrics else []
        parts += ["/health/live"] if self.live else []
        parts += ["/health/ready"] if self.ready else []
        return ", ".join(parts)

    # ---- pages -----------------------------------------------------------------------
    def metrics_page(self) -> bytes:
        page = exposition()
        if self.sdk_metrics_url:
            try:
                with urllib.request.urlopen(self.sdk_metrics_url, timeout=5) as response:
                    page += b"\n" + response.read()
            except OSError as exc:  # the core serves it; say so rather than fail the scrape
                log.warning("Temporal SDK metrics unavailable: %s", exc)
        return page

    def answer(self, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/metrics" and self.metrics:
            return 200, CONTENT_TYPE, self.metrics_page()
        probe = {"/health/live": self.live, "/health/ready": self.ready}.get(path)
        if probe is not None:
            try:
                ok, details = probe()
            except Exception as exc:  # a broken probe is a failing one
                ok, details = False, {"error": type(exc).__name__}
            body = json.dumps({"status": "ok" if ok else "unavailable", **details})
            return (200 if ok else 503), "application/json", body.encode()
        return 404, "application/json", b'{"detail": "Not Found"}'


def _handler_for(server: OpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = server.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes and probes every few seconds are not news

    return Handler
