"""The igny8 worker: wires settings, database, providers and activities to Temporal.

Only wiring lives here; the work is in activities/ and workflows/.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from functools import lru_cache
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from activities.automation import AutomationActivities
from activities.images import ImageActivities
from activities.ledger import LedgerActivities
from activities.logging import LoggingActivities
from activities.provider_gate import ProviderGate
from activities.publishing import PokeActivities, PublishingActivities, poke_publisher
from activities.runs import RunActivities
from activities.text import TextActivities
from core.heap import freeze_startup_heap
from core.logs import configure_logging
from core.observability import LogContextInterceptor, Observability, WorkerHealth
from core.settings import Settings, get_settings
from core.temporal import DATA_CONVERTER
from core.workflow_runner import IgnyWorkflowRunner
from domain import pg_notify, progress_feed
from domain.ledger import Ledger
from domain.provider_slots import SlotPool
from domain.publishing import sites_with_scheduled_content
from models.db import make_engine
from providers.media_store import media_store_from_settings
from providers.registry import ProviderRegistry
from workflows.automation_run import AutomationRunWorkflow
from workflows.hold_sweeper import HoldSweeperWorkflow, SweeperInput, sweeper_id
from workflows.image_batch import ImageBatchWorkflow
from workflows.publisher import PublisherWorkflow
from workflows.text_batch import TextBatchWorkflow

log = logging.getLogger("igny8.worker")

WORKFLOWS: Sequence[type] = (
    AutomationRunWorkflow,
    ImageBatchWorkflow,
    TextBatchWorkflow,
    PublisherWorkflow,
    HoldSweeperWorkflow,
)


def build_gate(engine: Any, executor: ThreadPoolExecutor | None) -> ProviderGate:
    """The process's provider-wide slots; its database work runs on the worker's pool."""

    async def run_blocking(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    return ProviderGate(SlotPool(engine), run_blocking)


def build_activities(
    settings: Settings,
    engine: Any,
    providers: ProviderRegistry,
    executor: ThreadPoolExecutor | None = None,
    gate: ProviderGate | None = None,
    client: Client | None = None,
) -> list[Any]:
    """Every activity method, bound to its dependencies."""
    ledger = Ledger(engine, hold_ttl_seconds=settings.hold_ttl_seconds)
    led = LedgerActivities(ledger)
    logs = LoggingActivities(engine)
    gate = gate or build_gate(engine, executor)
    store = media_store_from_settings(settings)
    images = ImageActivities(engine, providers, store, gate, executor)
    runs = RunActivities(gate.pool)
    text = TextActivities(engine, providers, gate, executor)
    automation = AutomationActivities(engine)
    publishing = PublishingActivities(engine, store, settings.secret_key.get_secret_value())
    pokes = PokeActivities(client, settings.task_queue)
    return [
        led.reserve_credits,
        led.deduct_credits,
        led.deduct_credits_many,
        led.release_hold,
        led.get_balance,
        led.expire_holds,
        led.extend_hold,
        logs.open_task_log,
        logs.close_task_log,
        logs.notify,
        images.plan_image_batch,
        images.generate_image,
        images.generate_images,
        images.mark_image_failed,
        images.finish_image_batch,
        runs.set_run_stopped,
        runs.forget_run,
        text.plan_text_batch,
        text.generate_text,
        text.withdraw_text,
        automation.plan_automation_run,
        automation.claim_run,
        automation.create_tasks,
        automation.finalize_content,
        publishing.publishing_agenda,
        publishing.start_publish,
        publishing.upload_image,
        publishing.create_post,
        publishing.publish_article,
        publishing.finish_publish,
        publishing.publish_due,
        publishing.publish_lane,
        publishing.fail_publish,
        pokes.poke_publisher,
        automation.record_run,
    ]


async def connect(settings: Settings, obs: Observability | None = None) -> Client:
    """The worker's client; with `obs`, traced and exporting the SDK's metrics (workers
    built on it inherit the tracing interceptor)."""
    address = settings.temporal_address or f"127.0.0.1:{settings.temporal_port}"
    return await Client.connect(
        address,
        namespace=settings.temporal_namespace,
        data_converter=DATA_CONVERTER,
        **(obs.client_options() if obs else {}),
    )


CODE_DIRS = ("workflows", "activities", "domain", "models", "providers", "core")


@lru_cache(maxsize=1)
def build_id() -> str:
    """What this worker's code is, for the Temporal UI: a digest of igny8's own sources.
    Left unset, the SDK hashes the bytecode of every loaded module (the openai SDK's
    thousands included), a fraction of a second of CPU at every worker start."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for folder in CODE_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return f"igny8-{digest.hexdigest()[:16]}"


def build_worker(
    client: Client,
    settings: Settings,
    engine: Any,
    providers: ProviderRegistry,
    executor: ThreadPoolExecutor,
    task_queue: str | None = None,
    gate: ProviderGate | None = None,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=list(WORKFLOWS),
        workflow_runner=IgnyWorkflowRunner(data_converter=client.data_converter),
        activities=build_activities(settings, engine, providers, executor, gate, client),
        activity_executor=executor,
        max_concurrent_activities=settings.activity_concurrency,
        max_concurrent_activity_task_polls=settings.activity_task_pollers,
        interceptors=[LogContextInterceptor()],
        build_id=build_id(),
    )


async def ensure_hold_sweeper(client: Client, task_queue: str) -> None:
    """One sweeper per task queue: starting it again while it runs is a no-op."""
    await client.start_workflow(
        HoldSweeperWorkflow.run,
        SweeperInput(),
        id=sweeper_id(task_queue),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary="Releases expired credit holds every 5 minutes",
    )


async def wake_publishers(client: Client, task_queue: str, engine: Any) -> None:
    """Every site with scheduled content gets its publisher running (a schedule change
    made while Temporal was unreachable is not left waiting)."""
    with engine.connect() as conn:
        sites = sites_with_scheduled_content(conn)
    for account_id, site_id in sites:
        await poke_publisher(client, task_queue, account_id, site_id)


def start_progress_feed(settings: Settings, engine: Any, stack: AsyncExitStack) -> None:
    """On PostgreSQL, the process's workflows announce each progress change to the API
    processes (domain/progress_feed.py); elsewhere, or with PROGRESS_FEED off, the API
    polls only."""
    url = pg_notify.postgres_url(engine) if settings.progress_feed else None
    if url is None:
        return
    feed = progress_feed.PgFeed(url).start()
    progress_feed.install(feed)
    stack.push_async_callback(asyncio.to_thread, feed.close)  # joins its thread: off the loop
    stack.callback(progress_feed.install, None)


async def run_worker(settings: Settings | None = None) -> None:
    """Run until SIGINT/SIGTERM, then finish in-flight work and stop. Metrics and the
    health probes are served on WORKER_METRICS_PORT / WORKER_HEALTH_PORT when set."""
    settings = settings or get_settings()
    obs = Observability.setup(
        settings, "worker", configure_logs=False, metrics_port=settings.worker_metrics_port
    )
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    client = await connect(settings, obs)
    health = WorkerHealth(engine, client)
    obs.serve(
        settings.worker_metrics_port,
        settings.worker_health_port,
        live=health.live,
        ready=health.ready,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        stack.callback(obs.shutdown)
        checks = asyncio.create_task(health.run())
        stack.callback(checks.cancel)
        providers = ProviderRegistry.from_settings(settings)
        stack.push_async_callback(providers.aclose)
        executor = stack.enter_context(
            ThreadPoolExecutor(max_workers=settings.activity_concurrency)
        )
        gate = build_gate(engine, executor)
        stack.push_async_callback(gate.close)
        start_progress_feed(settings, engine, stack)
        worker = build_worker(client, settings, engine, providers, executor, gate=gate)
        log.info("worker polling task queue %r on %s", settings.task_queue, client.namespace)
        freeze_startup_heap()  # before polling: the pass would hold up the first tasks
        async with worker:
            await ensure_hold_sweeper(client, settings.task_queue)
            await wake_publishers(client, settings.task_queue, engine)
            health.polling = True
            await stop.wait()
            health.polling = False  # draining: not ready for new work
    engine.dispose()


def main() -> None:
    """`python worker.py` / `igny8 worker`: logs as LOG_FORMAT says, then run."""
    settings = get_settings()
    configure_logging(settings, "worker")
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
