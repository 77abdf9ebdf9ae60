"""Operations (issue 10): metrics equal to the ledger, one trace per batch, JSON logs with
ids, no secret in any log line, health probes.

The worker-process test runs a real `python worker.py` (its metrics server, the Temporal
SDK's Prometheus runtime, its health probes and its LOG_FORMAT=json logs are the
production wiring), against the session's Temporal dev server and simulator, with the
API in this process. The trace test runs the worker in this process, so an in-memory
exporter sees every span. SQLite only: the ledger's counting is database-independent
and tests/test_ledger.py covers PostgreSQL.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from temporalio.client import Client

from api.deps import get_engine, get_settings_dep, get_temporal
from api.main import create_app
from core.logs import (
    REDACTOR,
    JsonFormatter,
    TextFormatter,
    ids_from_workflow_id,
    log_context,
    register_secret,
)
from core.observability import Observability
from core.ops_http import OpsServer
from core.settings import Settings
from core.tracing import make_tracer_provider, tracing_interceptor
from models import CreditReservation, CreditTransaction, Image
from simulator.server import SimulatorThread
from tests import builders, temporal_fixtures
from tests.fake_wordpress import DEFAULT_APP_PASSWORD, DEFAULT_USER, FakeWordPress
from tests.procs import ROOT, free_ports, stop, worker_env
from workflows.image_batch import ImageBatchWorkflow

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---- helpers ---------------------------------------------------------------------------
def scrape(url: str) -> Samples:
    """Every sample of a Prometheus page, by name and labels."""
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def ledger_facts(engine: sa.Engine, account_id: int) -> dict[str, int]:
    tx, holds, images = (
        CreditTransaction.__table__,
        CreditReservation.__table__,
        Image.__table__,
    )
    with engine.connect() as conn:
        deductions, charged = conn.execute(
            select(func.count(), func.coalesce(func.sum(-tx.c.amount), 0)).where(
                tx.c.account_id == account_id, tx.c.transaction_type == "deduction"
            )
        ).one()
        reserved, released = conn.execute(
            select(
                func.coalesce(func.sum(holds.c.amount), 0),
                func.coalesce(func.sum(holds.c.released), 0),
            ).where(holds.c.account_id == account_id)
        ).one()
        generated = conn.execute(
            select(func.count()).where(
                images.c.account_id == account_id, images.c.status == "generated"
            )
        ).scalar_one()
    return {
        "deductions": int(deductions),
        "charged": int(charged),
        "reserved": int(reserved),
        "released": int(released),
        "generated": int(generated),
    }


def seed_batch(engine: sa.Engine, model: str, credits: int = 100) -> tuple[int, str, list[int]]:
    """An account with a site and two articles (2 images each) on `model`: (account, api
    key, tasks)."""
    builders.billing_config(engine)
    builders.model_config(engine, model_name=model, credits_per_image=2, max_concurrency=4)
    account_id, key = builders.account(engine, credits=credits)
    site = builders.site(engine, account_id, max_in_article_images=1, image_model=model)
    tasks = [builders.task_with_content(engine, account_id, site.id, f"T{i}")[0].id for i in (1, 2)]
    return account_id, key, tasks


@asynccontextmanager
async def api_client(
    settings: Settings, engine: sa.Engine, client: Client, obs: Observability | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app in this event loop, wired to this test's database and Temporal."""
    app = create_app(settings, connect_temporal=False, observability=obs)
    app.dependency_overrides[get_engine] = lambda: engine
    app.dependency_overrides[get_settings_dep] = lambda: settings
    app.dependency_overrides[get_temporal] = lambda: client
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as http:
        yield http


async def batch_done(client: Client, batch_id: str) -> Any:
    handle = client.get_workflow_handle_for(ImageBatchWorkflow.run, batch_id)
    return await asyncio.wait_for(handle.result(), timeout=60)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the worker never got ready:\n{log.read_text()[-4000:]}")


@contextmanager
def captured_logs(log_format: str = "json") -> Iterator[io.StringIO]:
    """Every log line of this process, at DEBUG, formatted as a process would."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("api") if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"log line {number} is not JSON: {line[:300]!r}") from exc
    return parsed


# ---- a worker process: metrics, JSON logs, secrets, health ------------------------------------
@pytest.mark.temporal
@SQLITE_ONLY
async def test_worker_process_metrics_equal_the_ledger_and_its_json_logs_carry_ids_and_no_secret(
    temporal_client: Client,
    task_queue: str,
    engine: sa.Engine,
    db_url: str,
    sim: SimulatorThread,
    tmp_path: Path,
) -> None:
    model = f"obs-img-{secrets.token_hex(4)}"
    account_id, api_key, tasks = seed_batch(engine, model)
    ports = free_ports(("worker", "api"))
    secret_values = {
        "OPENAI_API_KEY": f"sk-obs-{secrets.token_hex(16)}",
        "RUNWARE_API_KEY": secrets.token_hex(16),
        "ADMIN_API_KEY": secrets.token_hex(16),
        "SECRET_KEY": secrets.token_hex(16),
        "S3_SECRET_ACCESS_KEY": secrets.token_hex(16),
    }
    address = temporal_client.service_client.config.target_host
    env = worker_env(db_url, address, task_queue, sim.url, tmp_path / "media")
    env.update(
        secret_values,
        OPENAI_BASE_URL=f"{sim.url}/v1",  # a real key on the real path, at the simulator
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        WORKER_METRICS_PORT=str(ports["worker"]),
        WORKER_HEALTH_PORT=str(ports["worker"]),
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=log_file, stderr=log_file
        )
    worker_url = f"http://127.0.0.1:{ports['worker']}"
    settings = temporal_fixtures.test_settings(db_url, sim.url, tmp_path / "media", task_queue)
    settings = settings.model_copy(update={"api_metrics_port": ports["api"]})
    api_obs = Observability(settings, "api")
    api_metrics = OpsServer("127.0.0.1", ports["api"]).start()
    try:
        await asyncio.to_thread(wait_ready, f"{worker_url}/health/ready", proc, log_path)
        live = httpx.get(f"{worker_url}/health/live", timeout=5)
        assert live.status_code == 200 and live.json()["status"] == "ok"
        api_before = scrape(f"http://127.0.0.1:{ports['api']}/metrics")

        async with api_client(settings, engine, temporal_client, api_obs) as api:
            started = await api.post(
                "/images/batches",
                json={"task_ids": tasks},
                headers={"Authorization": f"Bearer {api_key}"},
            )
            assert started.status_code == 202, started.text
            batch_id = started.json()["batch_id"]
            result = await batch_done(temporal_client, batch_id)
        assert (result.status, result.images_done) == ("completed", 4)

        worker = scrape(f"{worker_url}/metrics")
        api_after = scrape(f"http://127.0.0.1:{ports['api']}/metrics")
    finally:
        api_metrics.stop()
        await asyncio.to_thread(stop, proc)
    assert proc.returncode == 0, log_path.read_text()[-4000:]

    # Metrics: the worker counted exactly what the ledger holds.
    facts = ledger_facts(engine, account_id)
    assert facts["generated"] == facts["deductions"] == 4 and facts["charged"] == 8
    assert total(worker, "igny8_images_total", model=model, outcome="generated") == 4
    assert total(worker, "igny8_images_total", outcome="failed") == 0
    assert total(worker, "igny8_ledger_deductions_total") == facts["deductions"]
    assert total(worker, "igny8_credits_charged_total") == facts["charged"]
    assert (
        total(worker, "igny8_credits_charged_total", operation_type="image_generation")
        == facts["charged"]
    )
    assert total(worker, "igny8_credits_reserved_total") == facts["reserved"] > 0
    assert total(worker, "igny8_credits_released_total") == facts["released"]
    assert facts["reserved"] == facts["charged"] + facts["released"]
    assert total(worker, "igny8_provider_calls_total", model=model, outcome="ok") == 4
    assert total(worker, "igny8_provider_calls_total", model=model) == 4
    assert total(worker, "igny8_provider_call_seconds_count", model=model) == 4
    assert total(worker, "igny8_ledger_conflicts_total") == 0
    assert sim.stats()["images_generated"] == 4
    # ... beside the Temporal SDK's own metrics, on the same port.
    names = {name for name, _ in worker}
    for sdk_metric in (
        "temporal_activity_execution_latency",
        "temporal_activity_schedule_to_start_latency",
        "temporal_workflow_task_schedule_to_start_latency",
        "temporal_worker_task_slots_available",
    ):
        assert any(n.startswith(sdk_metric) for n in names), (sdk_metric, sorted(names)[:80])

    # The API counted the start and the request; the images are the worker's, not its own.
    def api_delta(name: str, **labels: str) -> float:
        return total(api_after, name, **labels) - total(api_before, name, **labels)

    assert api_delta("igny8_workflows_started_total", kind="image_batch") == 1
    route = "/api/v1/images/batches"
    assert api_delta("igny8_api_requests_total", method="POST", route=route, status="202") == 1
    assert total(api_after, "igny8_images_total", model=model) == 0

    # Logs: JSON, line by line, with the ids; no secret anywhere.
    text = log_path.read_text()
    lines = json_lines(text)
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    stored = [line for line in lines if "stored as" in line["message"]]
    assert len(stored) == 4, [line["message"] for line in lines][-40:]
    for line in stored:
        assert line["activity_type"] == "generate_image" and line["activity_id"]
        assert line["workflow_id"] == line["batch_id"] == batch_id
        assert line["account_id"] == account_id
    finished = [line for line in lines if line["logger"] == "temporalio.workflow"]
    assert any(
        line.get("workflow_id") == batch_id and line.get("account_id") == account_id
        for line in finished
    ), finished
    for name, value in secret_values.items():
        assert value not in text, f"{name} is in the worker's log"
    assert api_key not in text


# ---- one trace per batch; the API's logs ----------------------------------------------------
@pytest.mark.temporal
@SQLITE_ONLY
async def test_one_trace_per_batch_and_api_logs_with_ids_and_no_key_or_password(
    temporal_client: Client,
    task_queue: str,
    engine: sa.Engine,
    db_url: str,
    sim: SimulatorThread,
    tmp_path: Path,
) -> None:
    """One batch started through the API with tracing on: an in-memory exporter sees one
    trace from the API call through the workflow and each activity to each provider HTTP
    call. The API's log lines meanwhile (JSON) carry the ids and no API key or WordPress
    application password (the site's connection is saved and tested first)."""
    exporter = InMemorySpanExporter()
    settings = temporal_fixtures.test_settings(db_url, sim.url, tmp_path / "media", task_queue)
    obs = Observability.setup(settings, "test", span_exporter=exporter, configure_logs=False)
    assert obs.tracer_provider is not None
    config = temporal_client.config()
    traced = Client(**{**config, "interceptors": [tracing_interceptor(obs.tracer_provider)]})
    model = f"obs-img-{secrets.token_hex(4)}"
    account_id, api_key, tasks = seed_batch(engine, model)
    headers = {"Authorization": f"Bearer {api_key}"}
    site_id = builders.site(engine, account_id).id
    try:
        with FakeWordPress() as wp, captured_logs() as stream:
            async with (
                temporal_fixtures.running_worker(traced, settings, engine),
                api_client(settings, engine, traced, obs) as api,
            ):
                put = await api.put(
                    f"/sites/{site_id}/integrations/wordpress",
                    json={
                        "base_url": wp.url,
                        "username": DEFAULT_USER,
                        "application_password": DEFAULT_APP_PASSWORD,
                    },
                    headers=headers,
                )
                assert put.status_code == 200, put.text
                tested = await api.post(
                    f"/sites/{site_id}/integrations/wordpress/test", headers=headers
                )
                assert tested.status_code == 200, tested.text
                exporter.clear()  # the trace under test is the batch's
                started = await api.post(
                    "/images/batches", json={"task_ids": tasks}, headers=headers
                )
                assert started.status_code == 202, started.text
                batch_id = started.json()["batch_id"]
                result = await batch_done(traced, batch_id)
                bad = await api.get("/credits/balance", headers={"Authorization": "Bearer nope"})
                assert bad.status_code == 401
        assert result.images_done == 4
    finally:
        obs.shutdown()

    # The trace.
    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    [root] = [s for s in spans if s.name == "POST /api/v1/images/batches" and s.parent is None]
    trace_id = root.context.trace_id

    def ancestors(span: Any) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    batch = [s for s in spans if (s.attributes or {}).get("temporalWorkflowID") == batch_id]
    assert batch and {s.context.trace_id for s in batch} == {trace_id}
    names = [s.name for s in batch]
    assert "StartWorkflow:ImageBatchWorkflow" in [s.name for s in spans]
    assert "RunWorkflow:ImageBatchWorkflow" in names
    for activity in ("plan_image_batch", "reserve_credits", "generate_image", "notify"):
        assert f"RunActivity:{activity}" in names, (activity, sorted(set(names)))
    assert names.count("RunActivity:generate_image") == 4
    for span in batch:  # every workflow and activity span hangs off the API call
        assert root.name in ancestors(span), (span.name, ancestors(span))
    calls = [
        s
        for s in spans
        if "/v1/images/generations" in str((s.attributes or {}).get("url.full", ""))
        or "/v1/images/generations" in str((s.attributes or {}).get("http.url", ""))
    ]
    assert len(calls) == 4, sorted({s.name for s in spans})
    for call in calls:
        assert call.context.trace_id == trace_id
        chain = ancestors(call)
        assert chain[0] == "RunActivity:generate_image", chain
        # (Temporal's interceptor hangs activities off the workflow's start, beside RunWorkflow)
        assert "StartWorkflow:ImageBatchWorkflow" in chain and chain[-1] == root.name

    # The API's (and this in-process worker's) log lines.
    text = stream.getvalue()
    lines = json_lines(text)
    start = [line for line in lines if line["message"].startswith("image batch started")]
    assert len(start) == 1
    assert start[0]["account_id"] == account_id and start[0]["batch_id"] == batch_id
    assert start[0]["request_id"] and start[0]["site_id"]
    activity_lines = [line for line in lines if line.get("activity_type") == "generate_image"]
    assert len(activity_lines) >= 4
    assert all(line["account_id"] == account_id for line in activity_lines)
    for value in (api_key, DEFAULT_APP_PASSWORD, DEFAULT_APP_PASSWORD.replace(" ", "")):
        assert value not in text


# ---- the parts, fast -----------------------------------------------------------------------------
def record(msg: str = "hello", **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("igny8.test", logging.INFO, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_context_and_temporal_ids() -> None:
    formatter = JsonFormatter("worker")
    with log_context(account_id=7, request_id="r1"):
        line = json.loads(formatter.format(record()))
    assert line["account_id"] == 7 and line["request_id"] == "r1"
    assert line["service"] == "worker" and line["message"] == "hello"
    wf = {"workflow_id": "automation-3-9-abc123", "run_id": "r", "workflow_type": "Run"}
    line = json.loads(formatter.format(record(temporal_workflow=wf)))
    assert (line["account_id"], line["site_id"], line["run_id"]) == (3, 9, wf["workflow_id"])
    act = {"workflow_id": "image-batch-4-ff", "activity_id": "5", "activity_type": "x"}
    line = json.loads(formatter.format(record(temporal_activity=act)))
    assert (line["account_id"], line["batch_id"], line["activity_id"]) == (
        4,
        "image-batch-4-ff",
        "5",
    )
    assert ids_from_workflow_id("publisher-2-5") == {"account_id": 2, "site_id": 5}
    assert ids_from_workflow_id("hold-sweeper-igny8") == {}


def test_exceptions_stay_one_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("failed", exc_info=sys.exc_info())
    text = JsonFormatter("api").format(rec)
    assert "\n" not in text and "ValueError: boom" in json.loads(text)["exception"]


def test_secrets_never_reach_a_line() -> None:
    password = "wxyz ABCD 9876 qrst UVWX 5432"
    register_secret(password, "a-registered-token-123")
    leaky = [
        f"connecting with {password}",
        f"compact {password.replace(' ', '')}",
        "Authorization: Bearer igny8_" + "k" * 43,
        "headers {'authorization': 'Basic aWdueTg6c2VjcmV0'}",
        "OPENAI key sk-proj-abcdef0123456789",
        "postgresql+psycopg://igny8:pg-pass-123@db:5432/igny8",
        'body {"application_password": "hunter2hunter2"}',
        "token=a-registered-token-123&x=1",
    ]
    for text in leaky:
        out = REDACTOR(text)
        for secret in (password, password.replace(" ", ""), "igny8_kkkk", "aWdueTg6c2VjcmV0",
                       "abcdef0123456789", "pg-pass-123", "hunter2hunter2",
                       "a-registered-token-123"):  # fmt: skip
            assert secret not in out, (text, out)
    for harmless in (
        "table igny8_billing_creditusagelog",
        "Basic settings saved",
        "max_tokens=2000",
        "image 4 stored as 1/4.png",
    ):
        assert REDACTOR(harmless) == harmless
    # Settings' secrets are known once logging is configured; text lines redact too.
    settings = Settings(_env_file=None, openai_api_key="sk-zz-settings-key-0001")  # type: ignore[call-arg]
    from core.logs import settings_secrets

    register_secret(*settings_secrets(settings))
    assert "settings-key" not in TextFormatter().format(record("key sk-zz-settings-key-0001"))


def test_tracing_is_off_without_an_endpoint_and_exports_by_otlp_with_one() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert make_tracer_provider(settings, "api") is None
    obs = Observability.setup(settings, "api", configure_logs=False)
    assert obs.client_options() == {} and obs.tracer_provider is None
    with_endpoint = Settings(_env_file=None, otel_exporter_otlp_endpoint="http://collector:4318")  # type: ignore[call-arg]
    provider = make_tracer_provider(with_endpoint, "worker")
    assert provider is not None
    processor = provider._active_span_processor._span_processors[0]  # type: ignore[attr-defined]
    exporter = processor.span_exporter
    assert exporter._endpoint == "http://collector:4318/v1/traces"
    assert provider.resource.attributes["service.name"] == "igny8-worker"
    provider.shutdown()


def test_ops_server_serves_metrics_and_probes_and_404s_the_rest() -> None:
    [port] = free_ports(("ops",)).values()
    state = {"ready": False}
    server = OpsServer(
        "127.0.0.1",
        port,
        live=lambda: (True, {}),
        ready=lambda: (state["ready"], {"database": "ok"}),
    ).start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert "igny8_credits_charged_total" in httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/health/live").status_code == 200
        not_ready = httpx.get(f"{base}/health/ready")
        assert not_ready.status_code == 503 and not_ready.json()["status"] == "unavailable"
        state["ready"] = True
        assert httpx.get(f"{base}/health/ready").json() == {"status": "ok", "database": "ok"}
        assert httpx.get(f"{base}/nope").status_code == 404
    finally:
        server.stop()


def test_settings_leave_every_port_off_by_default() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.worker_metrics_port == settings.worker_health_port == 0
    assert settings.api_metrics_port == 0 and settings.log_format == "text"
    assert settings.otel_exporter_otlp_endpoint is None


def test_the_grafana_dashboard_charts_metrics_that_exist() -> None:
    """deploy/grafana/igny8-dashboard.json is valid JSON and every igny8_* series its
    queries name is one core.metrics defines (a renamed metric breaks this, not a chart)."""
    from prometheus_client import REGISTRY

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "igny8-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert dashboard["uid"] and len(exprs) >= 10
    known = {sample.name for family in REGISTRY.collect() for sample in family.samples} | {
        family.name for family in REGISTRY.collect()
    }
    suffixes = ("_total", "_bucket", "_sum", "_count")
    for expr in exprs:
        for name in re.findall(r"\b(igny8_[a-z_]+)", expr):
            base = next((name[: -len(s)] for s in suffixes if name.endswith(s)), name)
            assert name in known or base in known, f"{name} in {expr!r} is no igny8 metric"
    named = " ".join(exprs)
    for needed in ("igny8_images_total", "igny8_credits_charged_total", "igny8_provider_calls_total",
                   "igny8_provider_rate_limited_total", "igny8_publish_total",
                   "igny8_ledger_conflicts_total", "temporal_activity_schedule_to_start_latency"):  # fmt: skip
        assert needed in named, needed


def test_a_taken_metrics_port_is_an_error_in_the_log_not_a_dead_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        obs = Observability(Settings(_env_file=None), "worker")  # type: ignore[call-arg]
        with caplog.at_level(logging.ERROR, logger="igny8.observability"):
            assert obs.serve(port, port) == []
    assert f"cannot serve worker on port {port}" in caplog.text


@SQLITE_ONLY
def test_the_ledger_counts_each_committed_change_once_and_never_a_replay(
    engine: sa.Engine,
) -> None:
    """Counters move with committed ledger changes only: a replayed key adds nothing, a
    refused charge adds a refusal, a reused key a conflict, an expired hold `expired`."""
    from datetime import timedelta

    from prometheus_client import REGISTRY

    from domain.ledger import IdempotencyConflict, InsufficientCredits, Ledger, Usage

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    op = f"op-{secrets.token_hex(3)}"  # labels of this test alone
    names = {
        "charged": ("igny8_credits_charged_total", {"operation_type": op}),
        "deductions": ("igny8_ledger_deductions_total", {"operation_type": op}),
        "reserved": ("igny8_credits_reserved_total", {"operation_type": op}),
        "released": ("igny8_credits_released_total", {"reason": "released"}),
        "expired": ("igny8_credits_released_total", {"reason": "expired"}),
        "reused": ("igny8_ledger_conflicts_total", {"kind": "key_reused"}),
        "refused": ("igny8_credit_refusals_total", {"operation": "deduct"}),
        "added": ("igny8_credits_added_total", {"transaction_type": "purchase"}),
    }
    before = {k: value(n, **lab) for k, (n, lab) in names.items()}
    ledger = Ledger(engine)
    account_id, _ = builders.account(engine, credits=0)
    ledger.top_up(account_id, 50, f"{op}:topup")
    ledger.top_up(account_id, 50, f"{op}:topup")  # a replay
    hold = ledger.reserve(account_id, 20, f"{op}:hold", operation_type=op)
    ledger.reserve(account_id, 20, f"{op}:hold", operation_type=op)  # a replay
    usage = Usage(operation_type=op)
    ledger.deduct(account_id, 6, f"{op}:a", usage, hold_id=hold.hold_id)
    ledger.deduct(account_id, 6, f"{op}:a", usage, hold_id=hold.hold_id)  # a replay
    ledger.deduct_many(
        account_id,
        [
            ledger_item(f"{op}:b", 4, usage, hold.hold_id),
            ledger_item(f"{op}:c", 4, usage, hold.hold_id),
        ],
    )
    with pytest.raises(IdempotencyConflict):
        ledger.deduct(account_id, 7, f"{op}:a", usage)
    with pytest.raises(InsufficientCredits):
        ledger.deduct(account_id, 1000, f"{op}:too-much", usage)
    ledger.release(hold.hold_id)
    ledger.release(hold.hold_id)  # a replay
    stale = ledger.reserve(account_id, 5, f"{op}:stale", operation_type=op, ttl_seconds=1)
    ledger.expire_holds(now=stale.expires_at + timedelta(seconds=1))
    delta = {k: value(n, **lab) - before[k] for k, (n, lab) in names.items()}
    assert delta == {
        "charged": 14,
        "deductions": 3,
        "reserved": 25,
        "released": 6,  # 20 held, 14 charged from it
        "expired": 5,
        "reused": 1,
        "refused": 1,
        "added": 50,
    }
    assert builders.balance(engine, account_id) == 50 - 14


def ledger_item(key: str, amount: int, usage: Any, hold_id: int) -> Any:
    from domain.ledger import DeductItem

    return DeductItem(amount=amount, key=key, usage=usage, hold_id=hold_id)
