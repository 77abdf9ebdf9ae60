"""Metrics, traces, logs and health for one process, set up in one call, so worker.py and
api/main.py only wire them (`Observability.setup(settings, "worker")`).

- logs: core.logs (LOG_FORMAT, ids on every line, secrets redacted);
- traces: core.tracing (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set);
- the Temporal SDK's metrics: a Runtime whose Prometheus endpoint listens on a private
  loopback port, served again on the process's metrics port by core.ops_http;
- health: `WorkerHealth` keeps the answers `/health/live` and `/health/ready` give.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from core.logs import configure_logging, new_log_context, reset_log_context
from core.ops_http import OpsServer
from core.tracing import (
    instrument_httpx,
    make_tracer_provider,
    tracing_interceptor,
    uninstrument_httpx,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from core.settings import Settings

log = logging.getLogger("igny8.observability")

# Fields of an activity's input that name what it works on (for the log context).
_INPUT_IDS = ("account_id", "site_id", "batch_id", "run_id", "content_id", "image_id")


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def temporal_runtime(service: str) -> tuple[Runtime, str]:
    """A Temporal Runtime exporting the SDK's metrics in the Prometheus format on a
    private loopback port, and that page's URL."""
    port = free_loopback_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}"),
            global_tags={"igny8_service": service},
        )
    )
    return runtime, f"http://127.0.0.1:{port}/metrics"


@dataclass
class Observability:
    """What one process set up; hand `client_options()` to `Client.connect`."""

    settings: Settings
    service: str
    tracer_provider: TracerProvider | None = None
    runtime: Runtime | None = None
    sdk_metrics_url: str | None = None
    servers: list[OpsServer] = field(default_factory=list)

    @classmethod
    def setup(
        cls,
        settings: Settings,
        service: str,
        *,
        span_exporter: SpanExporter | None = None,
        configure_logs: bool = True,
        metrics_port: int = 0,
    ) -> Observability:
        """Logs (unless `configure_logs` is off: tests keep pytest's), traces (when an
        OTLP endpoint or `span_exporter` is given) and, when `metrics_port` is set, a
        Temporal runtime whose SDK metrics that port will serve."""
        if configure_logs:
            configure_logging(settings, service)
        provider = make_tracer_provider(settings, service, span_exporter)
        if provider is not None:
            instrument_httpx(provider)
            if span_exporter is None:  # the process's provider, for any other library
                from opentelemetry import trace

                trace.set_tracer_provider(provider)
        runtime, sdk_url = temporal_runtime(service) if metrics_port else (None, None)
        return cls(settings, service, provider, runtime, sdk_url)

    def client_options(self) -> dict[str, Any]:
        """`interceptors` (tracing) and `runtime` (SDK metrics) for `Client.connect`."""
        options: dict[str, Any] = {}
        if self.tracer_provider is not None:
            options["interceptors"] = [tracing_interceptor(self.tracer_provider)]
        if self.runtime is not None:
            options["runtime"] = self.runtime
        return options

    def serve(
        self, metrics_port: int, health_port: int = 0, *, live: Any = None, ready: Any = None
    ) -> list[OpsServer]:
        """/metrics on `metrics_port` and the probes on `health_port` (one server when the
        two are equal; 0: not served)."""
        wanted: list[OpsServer | None] = []
        if metrics_port:
            probes = {"live": live, "ready": ready} if health_port == metrics_port else {}
            wanted.append(
                self._server(metrics_port, sdk_metrics_url=self.sdk_metrics_url, **probes)
            )
        if health_port and health_port != metrics_port:
            wanted.append(self._server(health_port, metrics=False, live=live, ready=ready))
        started = [server for server in wanted if server is not None]
        for server in started:
            server.start()
        self.servers += started
        return started

    def _server(self, port: int, **options: Any) -> OpsServer | None:
        """A server on `port`; a port already taken (say two workers of `igny8 up` given
        one WORKER_METRICS_PORT) is a logged error, never a worker that cannot start."""
        try:
            return OpsServer(self.settings.metrics_host, port, **options)
        except OSError as exc:
            log.error("cannot serve %s on port %d: %s", self.service, port, exc)
            return None

    def stop_servers(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()

    def shutdown(self) -> None:
        self.stop_servers()
        if self.tracer_provider is not None:
            uninstrument_httpx()
            self.tracer_provider.shutdown()  # flushes what is still batched


# ---- the worker's activity context -----------------------------------------------------------
class LogContextInterceptor(Interceptor):
    """Every activity execution logs with its ids: the workflow's and the activity's
    (core.logs reads activity.info()), and the account, site, batch or run its input
    names."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _LogContextActivityInbound(next)


class _LogContextActivityInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        ids: dict[str, Any] = {}
        info = activity.info()
        ids["workflow_id"] = info.workflow_id
        for arg in input.args[:1]:
            for name in _INPUT_IDS:
                value = getattr(arg, name, None)
                if isinstance(value, int | str) and not isinstance(value, bool):
                    ids[name] = value
        token = new_log_context(**ids)
        try:
            return await super().execute_activity(input)
        finally:
            reset_log_context(token)


# ---- worker health ----------------------------------------------------------------------------
@dataclass
class WorkerHealth:
    """Liveness: the worker's event loop still turns (a heartbeat every `interval_s`; a
    loop stuck for `stale_after_s` is dead: restart it). Readiness: the worker polls, and
    its last checks reached the database and Temporal."""

    engine: Any
    client: Any
    interval_s: float = 5.0
    stale_after_s: float = 30.0
    polling: bool = False
    database: str = "unknown"
    temporal: str = "unknown"
    beat: float = field(default_factory=time.monotonic)

    async def run(self) -> None:
        while True:
            self.beat = time.monotonic()
            self.database = await asyncio.to_thread(self._check_database)
            self.temporal = await self._check_temporal()
            self.beat = time.monotonic()
            await asyncio.sleep(self.interval_s)

    def _check_database(self) -> str:
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("worker health: database unreachable: %s", type(exc).__name__)
            return f"error: {type(exc).__name__}"
        return "ok"

    async def _check_temporal(self) -> str:
        try:
            healthy = await self.client.service_client.check_health(timeout=timedelta(seconds=2))
        except Exception:
            return "unavailable"
        return "ok" if healthy else "unavailable"

    def live(self) -> tuple[bool, dict[str, Any]]:
        lag = time.monotonic() - self.beat
        return lag < self.stale_after_s, {"heartbeat_age_s": round(lag, 1)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        alive, details = self.live()
        ok = alive and self.polling and self.database == "ok" and self.temporal == "ok"
        return ok, {
            "polling": self.polling,
            "database": self.database,
            "temporal": self.temporal,
            **details,
        }
