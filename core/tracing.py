"""OpenTelemetry traces: one batch or run is one trace, from the API call through the
workflow and its activities to each provider and WordPress HTTP call.

- the API: FastAPI's instrumentation opens the server span of each request;
- Temporal: the SDK's TracingInterceptor (on the client, so workers built on that client
  get it too) carries the context in workflow and activity headers: StartWorkflow →
  RunWorkflow → StartActivity → RunActivity;
- HTTP: httpx's instrumentation makes a client span of every outgoing request (Runware,
  image downloads, WordPress), and `client_span` one of each OpenAI SDK call (the SDK
  runs over aiohttp), inside the activity's span.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (then spans go there over OTLP/HTTP, in
batches): with tracing off nothing is instrumented at all. Tests pass their own exporter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger("igny8.tracing")
TRACER_NAME = "igny8"


def otlp_traces_url(endpoint: str) -> str:
    """`http://collector:4318` → `http://collector:4318/v1/traces` (a full URL stays)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def make_tracer_provider(
    settings: Settings, service: str, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """A provider exporting to `exporter` (tests: at once) or to the OTLP endpoint (in
    batches); None when neither is there: tracing is off."""
    if exporter is None and not settings.otel_exporter_otlp_endpoint:
        return None
    resource = Resource.create(
        {
            "service.name": f"{settings.otel_service_name}-{service}",
            "service.namespace": settings.otel_service_name,
            "deployment.environment": settings.environment,
        }
    )
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = otlp_traces_url(str(settings.otel_exporter_otlp_endpoint))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        log.info("traces go to %s", url)
    return provider


def tracing_interceptor(provider: TracerProvider) -> Any:
    """Temporal's interceptor, for a client (and every worker built on that client)."""
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return TracingInterceptor(provider.get_tracer(TRACER_NAME))


def _httpx_instrumentors() -> list[Any]:
    """httpx's, and httpx2's where installed (the OpenAI SDK's own HTTP client)."""
    import importlib.util

    from opentelemetry.instrumentation import httpx as otel_httpx

    found = [otel_httpx.HTTPXClientInstrumentor()]
    httpx2 = getattr(otel_httpx, "HTTPX2ClientInstrumentor", None)
    if httpx2 is not None and importlib.util.find_spec("httpx2") is not None:
        found.append(httpx2())
    return found


# The provider that `client_span` uses: the OpenAI SDK runs over aiohttp here, which the
# httpx instrumentation does not see, so its calls open their client spans themselves.
_client_spans: TracerProvider | None = None


@contextmanager
def client_span(method: str, url: str) -> Iterator[Any]:
    """A client span for one outgoing request (as httpx's instrumentation makes them),
    inside the current span; nothing at all while tracing is off."""
    if _client_spans is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    parts = urlsplit(url)
    attributes = {"http.request.method": method, "url.full": url}
    if parts.hostname:
        attributes["server.address"] = parts.hostname
    if parts.port:
        attributes["server.port"] = parts.port
    tracer = _client_spans.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(method, kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span


def instrument_httpx(provider: TracerProvider) -> None:
    """Every httpx client of the process traces its requests; the OpenAI SDK's calls
    (over aiohttp) through `client_span`."""
    global _client_spans
    _client_spans = provider
    for instrumentor in _httpx_instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=provider)


def uninstrument_httpx() -> None:
    global _client_spans
    _client_spans = None
    for instrumentor in _httpx_instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


def instrument_fastapi(app: Any, provider: TracerProvider) -> None:
    """A server span per request (the health probes and /metrics excluded)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="/api/v1/health.*"
    )
