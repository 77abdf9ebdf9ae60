"""Benchmark: one automation run (clustering → ideas → tasks → content → image prompts →
images → review) over a site's keywords, on a real Temporal dev server, against the
simulator, with worker processes as `igny8 up` runs them.

    .venv/bin/python bench/automation.py [--db postgres|sqlite] [--keywords 500]
        [--text-latency 1.0] [--image-latency 2.0] [--text-concurrency 20]
        [--image-concurrency 20] [--workers 2] [--sequential-items 4]
        [--image-batch-size N] [--history-limit N]

Method
  The simulator runs in its own process with a latency per call kind (chat completions
  vs image generations) and a concurrency limit of text C + image C, so a provider-wide
  limit that leaks shows up as 429s. Keywords come in groups of five around one topic,
  four topics per clustering call (20 keywords a call, the default), so 500 keywords make
  25 clustering calls and 100 clusters; each cluster gets 2-3 ideas, each idea an article
  with a featured and one in-article image.

  floor = max(work bound, span bound), where
    work bound = max over the two models of (calls made × latency / max_concurrency):
                 text = clustering + ideas + content + image-prompt calls, image = images,
                 counted from the simulator's record of answered requests after the run;
    span bound = one article's critical path: a clustering call, its cluster's ideas
                 call, its content call, its prompts call, then its images, which its
                 child batch makes in parallel: 4 × text latency + 1 × image latency.
  efficiency = floor / wall time (goal >= 0.80); wall time runs from claiming the site
  to the workflow's result. Also printed, not a goal: a tighter "pipeline floor" that
  adds fill and drain (no image before one article's four text calls; the last image
  after the last text call): max(floor, 4·Lt + image work, text work + Li).

  Baseline, same invocation: the way igny8's Celery build ran it, stages strictly one
  after another and one call at a time, no Temporal: a loop calling the same activities
  (prompt, provider call through the same simulator, write) plus a deduction per call,
  on a second site, over at most --sequential-items items per stage. Its mean seconds
  per call of each kind, times the calls the full run made (plus the no-AI stages per
  article), is the extrapolated one-at-a-time time; speedup = that / wall (goal >= 20x).

  Per-stage times are first start → last finish of the stage's calls, from the
  database: each text call's record (igny8_ai_calls.created_at, written with its result)
  and each image row's updated_at when stored; a call's start is its finish minus the
  latency of its kind. "Where the rest went" comes from the simulator's timeline
  (GET /_sim/timeline): time before the first call, after the last answer, and how busy
  each model's slots were between its first call and its last answer; also when the
  run continued as new (each roll drains the work in flight first), how busy the
  machine's cores were (/proc/stat, every process on it) and the CPU seconds of the
  workers, Temporal, PostgreSQL and the simulator.

  Two diagnostic knobs (defaults: what the API starts): --image-batch-size (articles per
  child image batch in the site's automation config) and --history-limit (events before
  the run continues as new).

Writes bench/results/automation-<db>.json and prints a summary. Child processes, the
Temporal dev server and the temporary database are removed on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, func, select  # noqa: E402
from sqlmodel import Session  # noqa: E402
from temporalio.api.enums.v1 import TaskQueueType  # noqa: E402
from temporalio.api.taskqueue.v1 import TaskQueue  # noqa: E402
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.testing import ActivityEnvironment  # noqa: E402

from activities.automation import AutomationActivities, CreateTasksInput, FinalizeInput  # noqa: E402
from activities.images import GenerateImageInput, ImageActivities, PlanInput  # noqa: E402
from activities.text import TextActivities, TextCallInput, resolve_text_model  # noqa: E402
from cli.stack import ORPHAN_GUARD  # noqa: E402
from core.temporal import DATA_CONVERTER, search_attribute_flags, temporal_binary  # noqa: E402
from domain.ai_functions import (  # noqa: E402
    AUTO_CLUSTER,
    GENERATE_CONTENT,
    GENERATE_IDEAS,
    GENERATE_IMAGE_PROMPTS,
    GENERATE_IMAGES,
    AIFunction,
)
from domain.automation import chunks, claim_site, run_settings  # noqa: E402
from domain.ledger import Ledger, Usage  # noqa: E402
from domain.reconcile import reconcile  # noqa: E402
from models import Image  # noqa: E402
from models.automation import AutomationConfig  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.engine import AICall  # noqa: E402
from models.migrate import upgrade  # noqa: E402
from models.pipeline import Cluster, Keyword  # noqa: E402
from providers.media_store import LocalMediaStore  # noqa: E402
from providers.registry import ProviderRegistry  # noqa: E402
from tests import builders  # noqa: E402
from tests.dbs import LOCAL_PG, create_pg_database, drop_pg_database  # noqa: E402
from tests.procs import worker_env  # noqa: E402
from worker import build_gate  # noqa: E402
from workflows.automation_run import RunProgress  # noqa: E402
from workflows.client import new_run_id, start_automation_run  # noqa: E402

TEXT_MODEL = "bench-text"
IMAGE_MODEL = "bench-image"
KEYWORDS_PER_TOPIC = 5
TEXT_STAGES: dict[str, AIFunction] = {
    "clustering": AUTO_CLUSTER,
    "ideas": GENERATE_IDEAS,
    "content": GENERATE_CONTENT,
    "image_prompts": GENERATE_IMAGE_PROMPTS,
}
CHAT = "chat.completions"
IMAGES = "images.generations"
CREDITS = 50_000_000

# Keyword groups: "<use> <thing>" is a topic the simulator clusters on; five phrasings each.
_USES = [
    "coffee",
    "travel",
    "camping",
    "kitchen",
    "studio",
    "garden",
    "office",
    "outdoor",
    "beginner",
    "pro",
    "vintage",
    "wireless",
    "compact",
    "electric",
    "portable",
    "smart",
    "family",
    "budget",
    "luxury",
    "rustic",
]
_THINGS = [
    "grinder",
    "kettle",
    "tent",
    "backpack",
    "blender",
    "drone",
    "easel",
    "guitar",
    "kayak",
    "lantern",
    "mixer",
    "oven",
    "printer",
    "router",
    "scooter",
    "telescope",
    "treadmill",
    "umbrella",
    "wallet",
    "hammock",
]
_PHRASINGS = ("best {t}", "{t} reviews", "cheap {t}", "how to choose a {t}", "{t} buying guide")


# ---- small parts ------------------------------------------------------------------------
def keyword_list(n: int) -> list[str]:
    """n keywords, five per topic in a row, so each clustering call of 20 holds four
    whole topics (the simulator clusters by shared stems, as a model would)."""
    topics = [f"{use} {thing}" for use in _USES for thing in _THINGS]
    if n > len(topics) * KEYWORDS_PER_TOPIC:
        raise SystemExit(f"at most {len(topics) * KEYWORDS_PER_TOPIC} keywords")
    words = [p.format(t=t) for t in topics for p in _PHRASINGS]
    return words[:n]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Children:
    """The benchmark's child processes. Each leads its own session, so a terminal's Ctrl-C
    reaches only the benchmark, which stops them in order (workers before the server
    they talk to); on Linux each also dies with the benchmark, even a SIGKILLed one
    (`igny8 up`'s orphan guard). Output goes to a log file per child in the temp dir."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Any:
        guarded = [sys.executable, "-I", "-S", "-c", ORPHAN_GUARD, str(os.getpid()), *args]
        if not sys.platform.startswith("linux"):
            guarded = args
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                guarded,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        """SIGTERM to the child's group, SIGKILL after `timeout_s` (0: at once)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                return
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig if timeout_s > 0 else signal.SIGKILL)
            try:
                proc.wait(timeout_s if sig == signal.SIGTERM and timeout_s > 0 else 10)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop_all(self, timeout_s: float) -> None:
        """Newest first: workers and the API before the server and the simulator."""
        for _, proc in reversed(self.procs):
            self.stop(proc, timeout_s)

    def cpu(self) -> dict[tuple[str, int], float]:
        """CPU seconds so far of this process, each child (by kind: "worker", "api", ...)
        and every PostgreSQL server process on the machine."""
        out = {("benchmark", os.getpid()): process_cpu(os.getpid())}
        for name, proc in self.procs:
            out[(name.split("-")[0], proc.pid)] = process_cpu(proc.pid)
        for pid in pids_named("postgres"):
            out[("postgres", pid)] = process_cpu(pid)
        return out

    def print_tails(self, prefixes: tuple[str, ...], lines: int = 15) -> None:
        """The last lines each child of these kinds logged, to stderr."""
        for name, _ in self.procs:
            path = self.log_dir / f"{name}.log"
            if name.startswith(prefixes) and path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                print(f"--- {name} (last {len(tail)} lines)", *tail, sep="\n", file=sys.stderr)


def machine_cpu() -> tuple[float, float, float]:
    """(busy, total, stolen) CPU seconds of the whole machine so far (Linux /proc/stat;
    zeros elsewhere): busy / total over a run says whether the cores were the limit;
    stolen (part of busy) is time the hypervisor gave this virtual machine's cores to
    others, which slows a run without any process here using it."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    steal = fields[7] if len(fields) > 7 else 0.0
    return (sum(fields) - idle) / hz, sum(fields) / hz, steal / hz


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, 0.0 if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (float(stat[11]) + float(stat[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuMark:
    machine: tuple[float, float, float]
    processes: dict[tuple[str, int], float]


def cpu_mark(children: Children) -> CpuMark:
    return CpuMark(machine_cpu(), children.cpu())


def cpu_report(before: CpuMark, after: CpuMark) -> dict[str, Any]:
    """Between two marks: how busy the machine's cores were (everything on it, other
    users included), and the CPU seconds of each kind of process (of those alive at the
    second mark; a PostgreSQL backend that exited in between is not counted)."""
    busy = after.machine[0] - before.machine[0]
    total = after.machine[1] - before.machine[1]
    ours: dict[str, float] = {}
    for (kind, pid), seconds in after.processes.items():
        used = seconds - before.processes.get((kind, pid), 0.0)
        ours[kind] = round(ours.get(kind, 0.0) + used, 1)
    stolen = after.machine[2] - before.machine[2]
    ours["stolen by the hypervisor"] = round(stolen, 1)
    ours["everything else"] = round(busy - sum(ours.values()), 1)
    return {
        "machine_busy_share": round(busy / total, 3) if total else None,
        "cores": os.cpu_count(),
        "cpu_s": ours,
    }


def pids_named(command: str) -> list[int]:
    """Processes whose command name is `command` (Linux /proc; none elsewhere)."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if entry.name.isdigit():
            with suppress(OSError):
                if (entry / "comm").read_text().strip() == command:
                    found.append(int(entry.name))
    return found


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout_s:.0f} s")


class Simulator:
    """The simulator in its own process, so it never competes with a worker's GIL."""

    def __init__(self, children: Children, text_latency: float, image_latency: float,
                 concurrency: int) -> None:  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--port", str(self.port), "--chat-latency", str(text_latency)]
        args += ["--images-latency", str(image_latency), "--max-concurrency", str(concurrency)]
        proc = children.spawn("simulator", [sys.executable, "-m", "simulator", *args])
        wait_http(f"{self.url}/health", proc, "the simulator")

    def reset(self) -> None:
        """Zero the counters and the timeline (the config stays)."""
        httpx.post(f"{self.url}/_sim/reset", timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_sim/stats", timeout=10).json()

    def timeline(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/_sim/timeline", timeout=60).json()["requests"]


async def start_temporal(children: Children) -> Client:
    """A Temporal dev server (in memory, no UI) with igny8's search attributes."""
    port = free_port()
    args = [temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
    args += ["--headless", "--log-level", "error", *search_attribute_flags()]
    args += ["--dynamic-config-value", "limit.maxIDLength=255"]
    proc = children.spawn("temporal", args)
    deadline = time.monotonic() + 60
    while True:
        try:
            return await Client.connect(f"127.0.0.1:{port}", data_converter=DATA_CONVERTER)
        except RuntimeError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Temporal dev server did not start") from None
            await asyncio.sleep(0.2)


def database(kind: str, tmp: Path) -> tuple[str, Callable[[], None]]:
    """A fresh migrated database and how to drop it."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
        upgrade(url)
        return url, lambda: None
    url = create_pg_database(LOCAL_PG)
    return url, lambda: drop_pg_database(LOCAL_PG, url)


# ---- the stack ----------------------------------------------------------------------------
@dataclass
class Stack:
    """Everything a run needs, started for one benchmark invocation."""

    db: str
    url: str
    engine: Engine
    children: Children
    sim: Simulator
    client: Client
    task_queue: str
    tmp: Path

    @property
    def temporal_address(self) -> str:
        return self.client.service_client.config.target_host

    def child_env(self) -> dict[str, str]:
        """The environment of a worker (or API) child process wired to this stack."""
        return worker_env(
            self.url, self.temporal_address, self.task_queue, self.sim.url, self.tmp / "media"
        )

    async def start_workers(self, n: int) -> None:
        """`n` worker processes on the task queue, as `igny8 up` runs them; returns once
        all of them poll, so a run's wall time never includes a worker still importing."""
        for i in range(n):
            self.children.spawn(f"worker-{i + 1}", [sys.executable, "worker.py"], self.child_env())
        await wait_for_pollers(self.client, self.task_queue, n)


@asynccontextmanager
async def running_stack(
    db: str, workers: int, text_latency: float, image_latency: float, sim_limit: int,
    name: str = "automation",
) -> AsyncIterator[Stack]:  # fmt: skip
    """Database, simulator, Temporal dev server and `workers` worker processes; all of it
    is stopped and removed on the way out, whatever ends the block (Ctrl-C included)."""
    with ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix=f"igny8-bench-{name}-"))
        cleanup.callback(shutil.rmtree, tmp, True)
        url, drop = database(db, tmp)
        cleanup.callback(drop)
        engine = make_engine(url, pool_size=20)
        cleanup.callback(engine.dispose)
        children = Children(tmp)
        finished = False
        # a normal end lets children exit gracefully; an interrupted one kills them at once
        cleanup.callback(lambda: children.stop_all(30 if finished else 0))
        sim = Simulator(children, text_latency, image_latency, sim_limit)
        client = await start_temporal(children)
        stack = Stack(db, url, engine, children, sim, client, f"bench-{uuid.uuid4().hex[:8]}", tmp)
        await stack.start_workers(workers)
        try:
            yield stack
        except Exception:
            children.print_tails(("worker", "api"))  # the why, before the logs are removed
            raise
        finished = True


async def wait_for_pollers(client: Client, task_queue: str, n: int, timeout_s: float = 60) -> None:
    """Until n processes poll the queue for workflow and activity tasks, so a run's wall
    time never includes a worker still importing."""
    deadline = time.monotonic() + timeout_s
    kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    while time.monotonic() < deadline:
        seen = []
        for kind in kinds:
            answer = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=kind,
                )
            )
            seen.append(len({p.identity for p in answer.pollers}))
        if min(seen) >= n:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"fewer than {n} workers poll {task_queue} after {timeout_s:.0f} s")


# ---- seeding --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Site:
    account_id: int
    site_id: int
    api_key: str


def seed_models(engine: Engine, text_c: int, image_c: int) -> None:
    builders.billing_config(engine, "0.01")
    builders.text_model_config(engine, model_name=TEXT_MODEL, max_concurrency=text_c)
    builders.model_config(
        engine, model_name=IMAGE_MODEL, credits_per_image=1, max_concurrency=image_c
    )


def seed_site(
    engine: Engine,
    keywords: list[str],
    in_article: int,
    name: str,
    image_batch_size: int = 0,
) -> Site:
    """An account with credits to spare and a site whose keywords wait for a run; the
    site's automation config is the default unless image_batch_size is given."""
    acct, key = builders.account(engine, credits=CREDITS, name=name)
    row = builders.site(
        engine,
        acct,
        name=name,
        max_in_article_images=in_article,
        text_model=TEXT_MODEL,
        image_model=IMAGE_MODEL,
    )
    builders.keywords(engine, acct, row.id, keywords)
    if image_batch_size:
        with Session(engine) as session:
            session.add(
                AutomationConfig(account_id=acct, site_id=row.id, image_batch_size=image_batch_size)
            )
            session.commit()
    return Site(acct, row.id, key)


# ---- the run --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResult:
    run_id: str
    started: float  # wall clock (time.time) at the claim
    ended: float
    progress: RunProgress

    @property
    def wall_s(self) -> float:
        return self.ended - self.started


async def run_automation(
    stack: Stack, site: Site, history_limit: int = 0, timeout_s: float = 600
) -> RunResult:
    """Claim the site and start the run as the API does (history_limit 0: the workflow's
    default, as the API starts it); wait for its result, at most `timeout_s`."""
    run_id = new_run_id(site.account_id, site.site_id)
    started = time.time()
    with stack.engine.begin() as conn:
        if not claim_site(conn, run_id, site.account_id, site.site_id, None):
            raise RuntimeError("the site is busy")
    handle = await start_automation_run(
        stack.client,
        stack.task_queue,
        account_id=site.account_id,
        site_id=site.site_id,
        run_id=run_id,
        history_limit=history_limit or None,
    )
    try:
        progress = await asyncio.wait_for(handle.result(), timeout_s)
    except TimeoutError:
        raise RuntimeError(f"run {run_id} did not finish within {timeout_s:.0f} s") from None
    return RunResult(run_id, started, time.time(), progress)


async def continued_as_new(client: Client, run_id: str) -> list[float]:
    """When the run continued as new (s from its first start): each roll drains its work
    in flight first, so it shows in the wall time."""
    starts = sorted(
        [w.start_time.timestamp() async for w in client.list_workflows(f'WorkflowId="{run_id}"')]
    )
    return [round(t - starts[0], 2) for t in starts[1:]]


def stage_counts(progress: RunProgress) -> dict[str, dict[str, int]]:
    return {s.name: {"total": s.total, "done": s.done, "failed": s.failed} for s in progress.stages}


# ---- what the run did, from the database and the simulator ---------------------------------
def calls_by_function(engine: Engine, run_id: str) -> dict[str, int]:
    """Text calls recorded for the run, per function (done ones: the ones charged)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(AICall.function_name, func.count())
            .where(AICall.workflow_id == run_id, AICall.status == "done")
            .group_by(AICall.function_name)
        ).all()
    return {name: n for name, n in rows}


def stage_times(
    engine: Engine, run: RunResult, site: Site, text_latency: float, image_latency: float
) -> dict[str, dict[str, float | int]]:
    """First start → last finish of each AI stage's calls, in seconds from the claim.
    A call's finish is its database record; its start that minus its kind's latency."""
    with engine.connect() as conn:
        finishes = {
            stage: [
                t.timestamp()
                for t in conn.execute(
                    select(AICall.created_at).where(
                        AICall.workflow_id == run.run_id, AICall.function_name == fn.name
                    )
                ).scalars()
            ]
            for stage, fn in TEXT_STAGES.items()
        }
        finishes["images"] = [
            t.timestamp()
            for t in conn.execute(
                select(Image.updated_at).where(
                    Image.site_id == site.site_id, Image.status == "generated"
                )
            ).scalars()
        ]
    out: dict[str, dict[str, float | int]] = {}
    for stage, times in finishes.items():
        if not times:
            continue
        latency = image_latency if stage == "images" else text_latency
        first, last = min(times) - latency - run.started, max(times) - run.started
        out[stage] = {
            "calls": len(times),
            "first_start_s": round(first, 2),
            "last_finish_s": round(last, 2),
            "span_s": round(last - first, 2),
        }
    return out


def max_in_flight(rows: list[dict[str, Any]]) -> int:
    events = sorted([(r["arrived"], 1) for r in rows] + [(r["left"], -1) for r in rows])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def slot_use(rows: list[dict[str, Any]], concurrency: int) -> dict[str, float]:
    """How busy a model's C slots were between its first call and its last answer."""
    if not rows:
        return {}
    first = min(r["arrived"] for r in rows)
    last = max(r["left"] for r in rows)
    busy = sum(r["left"] - r["arrived"] for r in rows)
    return {
        "first_call_s": first,
        "last_answer_s": last,
        "busy_share": round(busy / (concurrency * (last - first)), 3),
        "max_in_flight": max_in_flight(rows),
    }


def where_time_went(
    timeline: list[dict[str, Any]], run: RunResult, text_c: int, image_c: int
) -> dict[str, Any]:
    """Before the first provider call, after the last answer, and each model's slots."""
    rows = [r for r in timeline if run.started <= r["arrived"] <= run.ended]
    text = slot_use([r for r in rows if r["endpoint"] == CHAT], text_c)
    images = slot_use([r for r in rows if r["endpoint"] == IMAGES], image_c)
    for part in (text, images):
        for key in ("first_call_s", "last_answer_s"):
            if key in part:
                part[key] = round(part[key] - run.started, 2)
    if not rows:
        return {}
    return {
        "before_first_call_s": round(min(r["arrived"] for r in rows) - run.started, 3),
        "after_last_answer_s": round(run.ended - max(r["left"] for r in rows), 3),
        "text": text,
        "images": images,
    }


# ---- the floor ------------------------------------------------------------------------------
def floor(text_calls: int, image_calls: int, opts: argparse.Namespace) -> dict[str, float]:
    """The lower bounds on the run's wall time (see the module docstring)."""
    lt, li = opts.text_latency, opts.image_latency
    text_work = text_calls * lt / opts.text_concurrency
    image_work = image_calls * li / opts.image_concurrency
    work = max(text_work, image_work)
    span = 4 * lt + (li if image_calls else 0.0)
    bound = max(work, span)
    pipeline = bound
    if image_calls:
        pipeline = max(bound, 4 * lt + image_work, text_work + li)
    return {
        "text_work_s": round(text_work, 3),
        "image_work_s": round(image_work, 3),
        "work_s": round(work, 3),
        "span_s": round(span, 3),
        "floor_s": round(bound, 3),
        "pipeline_floor_s": round(pipeline, 3),
    }


# ---- the Celery build's way: one stage after another, one call at a time --------------------
@dataclass
class SequentialTimes:
    """Seconds per call of each kind, and of the no-AI stages, measured one at a time."""

    per_call: dict[str, list[float]] = field(default_factory=dict)
    flow_s: float = 0.0  # writer tasks and review, for `articles` articles
    articles: int = 0
    wall_s: float = 0.0

    def add(self, kind: str, seconds: float) -> None:
        self.per_call.setdefault(kind, []).append(seconds)

    def mean(self, kind: str) -> float:
        values = self.per_call.get(kind, [])
        return sum(values) / len(values) if values else 0.0


class SequentialLoop:
    """The same activities as the workflow (prompt, provider call, write), called by a
    plain loop in this process with a deduction after each call: no Temporal, no overlap."""

    def __init__(self, stack: Stack, site: Site, limit: int, in_article: int) -> None:
        self.engine = stack.engine
        self.site = site
        self.limit = limit
        self.in_article = in_article
        self.workflow_id = f"sequential-{uuid.uuid4().hex[:8]}"
        self.ledger = Ledger(self.engine)
        self.providers = ProviderRegistry(simulator_url=stack.sim.url, timeout_s=120)
        self.gate = build_gate(self.engine, None)
        self.text = TextActivities(self.engine, self.providers, self.gate)
        store = LocalMediaStore(stack.tmp / "sequential-media")
        self.images = ImageActivities(self.engine, self.providers, store, self.gate)
        self.flow = AutomationActivities(self.engine)
        self.env = ActivityEnvironment()
        self.times = SequentialTimes()

    async def run(self) -> SequentialTimes:
        started = time.perf_counter()
        try:
            clusters = await self._clustering()
            ideas = await self._text_stage("ideas", clusters[: self.limit], "idea_ids")
            tasks = self._tasks(ideas)
            contents = await self._text_stage("content", tasks[: self.limit], "content_id")
            await self._text_stage("image_prompts", contents, None)
            await self._images(tasks[: len(contents)])
            self._review(contents)
        finally:
            await self.gate.close()
            await self.providers.aclose()
        self.times.wall_s = time.perf_counter() - started
        self.times.articles = len(contents)
        return self.times

    async def _clustering(self) -> list[int]:
        """One call per keyword batch of the site (the sequential site holds just enough
        keywords for the clusters it needs)."""
        with self.engine.connect() as conn:
            keyword_ids = list(
                conn.execute(
                    select(Keyword.id)
                    .where(Keyword.site_id == self.site.site_id)
                    .order_by(Keyword.id)
                ).scalars()
            )
            per_call = run_settings(conn, self.site.site_id).keywords_per_cluster_call
        for n, members in enumerate(chunks(keyword_ids, per_call)):
            await self._call("clustering", n, members)
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(Cluster.id)
                    .where(Cluster.site_id == self.site.site_id)
                    .order_by(Cluster.id)
                ).scalars()
            )

    async def _text_stage(self, stage: str, items: list[int], made: str | None) -> list[int]:
        out: list[int] = []
        for item in items:
            result = await self._call(stage, item, [])
            if made == "idea_ids":
                out.extend(result.get("idea_ids", []))
            elif made == "content_id" and result.get("content_id") is not None:
                out.append(result["content_id"])
        return out

    async def _call(self, stage: str, item: int, members: list[int]) -> dict[str, Any]:
        """One metered text call, then its deduction, timed together."""
        fn = TEXT_STAGES[stage]
        with self.engine.connect() as conn:
            model = resolve_text_model(conn, TEXT_MODEL, self.site.site_id)
        inp = TextCallInput(
            function_name=fn.name,
            workflow_id=self.workflow_id,
            account_id=self.site.account_id,
            item_id=item,
            model=model,
            members=members,
        )
        started = time.perf_counter()
        out = await self.env.run(self.text.generate_text, inp)
        if out.status != "done":
            raise RuntimeError(f"sequential {fn.name} {item}: {out.status} {out.error}")
        self._deduct(fn, item, out.credits, out.cost_usd, out.tokens_input, out.tokens_output)
        self.times.add(stage, time.perf_counter() - started)
        return out.result

    def _deduct(
        self, fn: AIFunction, item: int, credits: int, cost: Decimal, t_in: int = 0, t_out: int = 0
    ) -> None:
        if credits <= 0:
            return
        usage = Usage(
            operation_type=fn.operation_type,
            cost_usd=cost,
            model_name=TEXT_MODEL if fn is not GENERATE_IMAGES else IMAGE_MODEL,
            tokens_input=t_in,
            tokens_output=t_out,
        )
        self.ledger.deduct(
            self.site.account_id, credits, fn.item_key(self.workflow_id, item), usage
        )

    def _tasks(self, ideas: list[int]) -> list[int]:
        started = time.perf_counter()
        out = self.env.run(
            self.flow.create_tasks,
            CreateTasksInput(
                account_id=self.site.account_id, site_id=self.site.site_id, idea_ids=ideas
            ),
        )
        self.times.flow_s += time.perf_counter() - started
        return list(out.task_ids)

    async def _images(self, task_ids: list[int]) -> None:
        plan = self.env.run(
            self.images.plan_image_batch,
            PlanInput(
                batch_id=f"{self.workflow_id}-images",
                account_id=self.site.account_id,
                task_ids=task_ids,
                model=IMAGE_MODEL,
                max_in_article_images=self.in_article,
            ),
        )
        for slot in plan.slots:
            started = time.perf_counter()
            out = await self.env.run(
                self.images.generate_image,
                GenerateImageInput(
                    batch_id=f"{self.workflow_id}-images",
                    account_id=self.site.account_id,
                    image_id=slot.image_id,
                    model_name=plan.model_name,
                    provider=plan.provider,
                    prompt=slot.prompt,
                    cost_per_image=plan.cost_per_image,
                    credits_per_image=plan.credits_per_image,
                    max_concurrency=plan.max_concurrency,
                ),
            )
            if out.status != "generated":
                raise RuntimeError(f"sequential image {slot.image_id}: {out.status} {out.error}")
            self._deduct(GENERATE_IMAGES, slot.image_id, plan.credits_per_image, out.cost_usd)
            self.times.add("images", time.perf_counter() - started)

    def _review(self, contents: list[int]) -> None:
        started = time.perf_counter()
        self.env.run(
            self.flow.finalize_content,
            FinalizeInput(
                account_id=self.site.account_id, site_id=self.site.site_id, content_ids=contents
            ),
        )
        self.times.flow_s += time.perf_counter() - started


def extrapolate(
    seq: SequentialTimes, calls: dict[str, int], articles: int, wall_s: float
) -> dict[str, Any]:
    """One at a time for the whole run: each kind's measured mean × the run's calls of that
    kind, plus the no-AI stages (writer tasks, review) per article."""
    per_call = {kind: round(seq.mean(kind), 4) for kind in calls}
    flow_per_article = seq.flow_s / seq.articles if seq.articles else 0.0
    total = sum(seq.mean(kind) * n for kind, n in calls.items()) + flow_per_article * articles
    return {
        "calls_measured": {kind: len(v) for kind, v in seq.per_call.items()},
        "seconds_measured": round(seq.wall_s, 3),
        "mean_s_per_call": per_call,
        "flow_s_per_article": round(flow_per_article, 4),
        "extrapolated_to": calls,
        "seconds_for_all": round(total, 1),
        "speedup": round(total / wall_s, 2),
    }


# ---- one invocation -------------------------------------------------------------------------
def run_calls(engine: Engine, run: RunResult, timeline: list[dict[str, Any]]) -> dict[str, int]:
    """Calls the run made per stage: text from the records (per function), images from
    the simulator (answered image requests while the run ran)."""
    by_fn = calls_by_function(engine, run.run_id)
    calls = {stage: by_fn.get(fn.name, 0) for stage, fn in TEXT_STAGES.items()}
    calls["images"] = sum(
        1 for r in timeline if r["endpoint"] == IMAGES and run.started <= r["arrived"] <= run.ended
    )
    return calls


def run_report(
    stack: Stack, site: Site, run: RunResult, opts: argparse.Namespace
) -> dict[str, Any]:
    timeline, stats = stack.sim.timeline(), stack.sim.stats()
    answered = Counter(r["endpoint"] for r in timeline if run.started <= r["arrived"] <= run.ended)
    calls = run_calls(stack.engine, run, timeline)
    bounds = floor(answered[CHAT], answered[IMAGES], opts)
    return {
        "run_id": run.run_id,
        "status": run.progress.status,
        "keywords": opts.keywords,
        "stages": stage_counts(run.progress),
        "calls": calls,
        "text_calls_made": answered[CHAT],
        "image_calls_made": answered[IMAGES],
        "sim_429s": stats.get("rejected_429", 0),
        **bounds,
        "wall_s": round(run.wall_s, 3),
        "efficiency": round(bounds["floor_s"] / run.wall_s, 3),
        "pipeline_efficiency": round(bounds["pipeline_floor_s"] / run.wall_s, 3),
        "stage_times": stage_times(stack.engine, run, site, opts.text_latency, opts.image_latency),
        "breakdown": where_time_went(timeline, run, opts.text_concurrency, opts.image_concurrency),
    }


async def sequential_report(
    stack: Stack, opts: argparse.Namespace, calls: dict[str, int], articles: int, wall_s: float
) -> dict[str, Any]:
    """The one-at-a-time baseline on a second site, extrapolated to the run's calls."""
    stack.sim.reset()
    clustering_calls = -(-opts.sequential_items // 4)  # four clusters a call
    words = keyword_list(clustering_calls * 4 * KEYWORDS_PER_TOPIC)
    site = seed_site(stack.engine, words, opts.in_article_images, "sequential")
    loop = SequentialLoop(stack, site, opts.sequential_items, opts.in_article_images)
    seq = await loop.run()
    return extrapolate(seq, calls, articles, wall_s)


async def measure(opts: argparse.Namespace) -> dict[str, Any]:
    sim_limit = opts.text_concurrency + opts.image_concurrency
    async with running_stack(
        opts.db, opts.workers, opts.text_latency, opts.image_latency, sim_limit
    ) as stack:
        seed_models(stack.engine, opts.text_concurrency, opts.image_concurrency)
        site = seed_site(stack.engine, keyword_list(opts.keywords), opts.in_article_images, "bench")
        stack.sim.reset()
        before = cpu_mark(stack.children)
        run = await run_automation(stack, site, opts.history_limit, opts.timeout)
        cpu = cpu_report(before, cpu_mark(stack.children))
        report = run_report(stack, site, run, opts)
        report["cpu"] = cpu
        report["continued_as_new"] = await continued_as_new(stack.client, run.run_id)
        articles = report["stages"]["content"]["done"]
        report["sequential"] = await sequential_report(
            stack, opts, report["calls"], articles, run.wall_s
        )
        report["reconcile_breaches"] = len(reconcile(stack.engine))
    return {
        "db": opts.db,
        "worker_processes": opts.workers,
        "text_latency_s": opts.text_latency,
        "image_latency_s": opts.image_latency,
        "text_concurrency": opts.text_concurrency,
        "image_concurrency": opts.image_concurrency,
        "in_article_images": opts.in_article_images,
        "history_limit": opts.history_limit or "default",
        "image_batch_size": opts.image_batch_size or "default",
        **report,
    }


async def cancellable(coro: Any) -> Any:
    """Run `coro` so SIGTERM cancels it like Ctrl-C does: its clean-up runs either way."""
    task = asyncio.ensure_future(coro)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


# ---- the summary ------------------------------------------------------------------------------
def summary(r: dict[str, Any]) -> list[str]:
    tag = f"[{r['db']}]"
    c, st = r["calls"], r["stages"]
    lines = [
        f"{tag} run {r['status']}: {r['keywords']} keywords -> {st['clustering']['done']} "
        f"clustering calls, {st['ideas']['done']} clusters, {st['content']['done']} articles, "
        f"{c['images']} images; {r['worker_processes']} worker processes",
        f"{tag} calls: text {r['text_calls_made']} (clustering {c['clustering']}, ideas "
        f"{c['ideas']}, content {c['content']}, prompts {c['image_prompts']}) at "
        f"{r['text_latency_s']} s, C={r['text_concurrency']}; images {r['image_calls_made']} at "
        f"{r['image_latency_s']} s, C={r['image_concurrency']}",
        f"{tag} floor = max(work {r['work_s']} s [text {r['text_work_s']}, images "
        f"{r['image_work_s']}], span {r['span_s']} s) = {r['floor_s']} s; wall {r['wall_s']} s "
        f"-> efficiency {r['efficiency']:.3f} (goal >= 0.80)",
        f"{tag}   pipeline floor (with fill and drain) {r['pipeline_floor_s']} s -> "
        f"{r['pipeline_efficiency']:.3f}",
        f"{tag} stages (s from start: first start -> last finish): "
        + "; ".join(
            f"{name} {t['first_start_s']}->{t['last_finish_s']}"
            for name, t in r["stage_times"].items()
        ),
    ]
    lines += breakdown_lines(tag, r["breakdown"])
    cpu = r["cpu"]
    if cpu["machine_busy_share"] is not None:
        per = ", ".join(f"{k} {v} s" for k, v in cpu["cpu_s"].items())
        lines.append(
            f"{tag}   cores {cpu['machine_busy_share']:.0%} busy during the run "
            f"({cpu['cores']} cores, all processes on the machine); CPU seconds: {per}"
        )
    if r["continued_as_new"]:
        lines.append(
            f"{tag}   continued as new at {r['continued_as_new']} s (history limit "
            f"{r['history_limit']}): claims stop and work in flight drains before each"
        )
    seq = r["sequential"]
    lines.append(
        f"{tag} one at a time (Celery build's way): {seq['seconds_for_all']} s, extrapolated "
        f"from {sum(seq['calls_measured'].values())} calls measured in "
        f"{seq['seconds_measured']} s (mean s/call {seq['mean_s_per_call']}) -> speedup "
        f"{seq['speedup']}x (goal >= 20x)"
    )
    lines.append(
        f"{tag} simulator 429s: {r['sim_429s']}; reconcile breaches: {r['reconcile_breaches']}"
    )
    return lines


def breakdown_lines(tag: str, b: dict[str, Any]) -> list[str]:
    if not b:
        return []
    lines = [
        f"{tag} where the rest went: {b['before_first_call_s']} s before the first provider "
        f"call, {b['after_last_answer_s']} s after the last answer"
    ]
    for name in ("text", "images"):
        part = b[name]
        if part:
            lines.append(
                f"{tag}   {name} slots {part['busy_share']:.0%} busy from its first call "
                f"({part['first_call_s']} s) to its last answer ({part['last_answer_s']} s); "
                f"at most {part['max_in_flight']} in flight"
            )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--db", choices=["postgres", "sqlite"], default="postgres")
    add("--keywords", type=int, default=500, help="keywords on the site (default: 500)")
    add("--text-latency", type=float, default=1.0, help="Lt: seconds per chat completion")
    add("--image-latency", type=float, default=2.0, help="Li: seconds per image generation")
    add("--text-concurrency", type=int, default=20, help="the text model's max_concurrency")
    add("--image-concurrency", type=int, default=20, help="the image model's max_concurrency")
    add("--in-article-images", type=int, default=1, help="images per article besides the featured")
    add("--workers", type=int, default=2, help="worker processes, as `igny8 up` runs them")
    add("--timeout", type=float, default=600, help="give up on a run after this many seconds")
    add(
        "--image-batch-size",
        type=int,
        default=0,
        help="articles per child image batch in the site's automation config (0: the "
        "default config; a diagnostic knob)",
    )
    add(
        "--history-limit",
        type=int,
        default=0,
        help="the run's history limit before it continues as new (0: the workflow's default, "
        "as the API starts it; a diagnostic knob)",
    )
    add(
        "--sequential-items",
        type=int,
        default=4,
        help="items per stage in the one-at-a-time baseline (its means are extrapolated)",
    )
    return parser.parse_args()


def main() -> None:
    opts = parse_args()
    try:
        results = asyncio.run(cancellable(measure(opts)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: child processes stopped, temporary database removed")
        raise SystemExit(130) from None
    out = ROOT / "bench" / "results" / f"automation-{opts.db}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for line in summary(results):
        print(line)
    print(f"[{opts.db}] written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
