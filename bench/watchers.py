"""Benchmark: 100 Server-Sent-Events watchers on one running automation run, through the
real API (`igny8 api` in its own process) with worker processes as `igny8 up` runs them,
a Temporal dev server and the simulator.

    .venv/bin/python bench/watchers.py [--db postgres|sqlite] [--watchers 100]
        [--keywords 300] [--workers 2] [--probe-interval 0]

Method
  A short warm-up run (not measured) first, so neither measured run pays a cold worker.
  Then two runs of the same size on two sites with the same keywords, each started with
  POST /api/v1/automation/runs: first unwatched, then watched by --watchers SSE clients
  (GET /api/v1/automation/runs/{id}/events, one connection each, in this process).
  Wall time runs from the POST to the workflow's result. The simulator's ideas come in
  twos or threes, so the two runs differ a little in work: each run's wall time is also
  divided by its floor (bench/automation.py's lower bound from the calls it made), and
  the goal, watched within 5 % of unwatched, is judged on that ratio (both are printed).

  Delay from a progress change to each watcher (goal: p99 < 500 ms). The moment the
  workflow's progress changed cannot be seen by a client, and asking the workflow
  itself (a second querier beside the API's poller) slows the API's own queries (see
  --probe-interval), so it is dated from the rows the run wrote: a stage counts an item
  only after the item's row exists (a text item's charge, a writer task, a child batch's
  finish, an article moved to review), so the snapshot showing a stage at n done cannot
  exist before the n-th such row; and a text stage shows `completed` only after the
  workflow has closed its task log (the log row's update). A snapshot's earliest moment
  is the latest of these over its stages; arrival minus that is an upper bound of the
  delay (too high by the time from a row's commit to the workflow counting it, typically
  tens of ms; more for a change that moves no count, such as a flow stage's status).
  The same figure dated by the item rows alone (as before the task-log rule) is printed
  beside it. A watcher's delay is counted
  for each snapshot whose workflow progress (not the ledger balance or the child
  batches' live counts, which the API adds) differs from the one before; a watcher's
  first snapshot (sent on connect) is not a change. The final snapshot, which the API
  reads from the run's row, is dated by the time the workflow marked the row finished.
  Also reported: the fan-out spread, each arrival minus the earliest arrival of the same
  snapshot at any watcher (the API's delivery alone).

  CPU seconds of the API, workers, Temporal, PostgreSQL, this process (the watchers) and
  everything else on the machine are printed for both runs: on one 2-core machine the
  watchers' own parsing competes with the workers, which a real deployment would not see.

Writes bench/results/watchers.json and prints a summary. Child processes, the Temporal
dev server and the temporary database are removed on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.automation import (  # noqa: E402
    Site,
    Stack,
    calls_by_function,
    cancellable,
    cpu_mark,
    cpu_report,
    floor,
    free_port,
    keyword_list,
    running_stack,
    seed_models,
    seed_site,
    wait_http,
)
from domain.ai_functions import (  # noqa: E402
    AUTO_CLUSTER,
    GENERATE_CONTENT,
    GENERATE_IDEAS,
    GENERATE_IMAGE_PROMPTS,
)
from models import AITaskLog, Content, CreditUsageLog, Image, Task  # noqa: E402
from models.runs import AutomationRun, ImageBatch  # noqa: E402
from workflows.automation_run import AutomationRunWorkflow  # noqa: E402

API = "/api/v1"
FINAL = {"completed", "cancelled", "failed"}
NOT_PROGRESS = ("balance", "live_images")  # what the API adds to the workflow's progress
WARMUP_KEYWORDS = 20


def progress_key(snapshot: dict[str, Any]) -> str:
    """The workflow's part of a snapshot, as text: equal keys are the same progress."""
    return json.dumps({k: v for k, v in snapshot.items() if k not in NOT_PROGRESS}, sort_keys=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[float]) -> dict[str, Any]:
    """p50 / p99 / max in milliseconds, and how many."""
    ms = [v * 1000 for v in values]
    pick = {name: percentile(ms, q) for name, q in (("p50", 0.5), ("p99", 0.99))}
    return {
        **{k: round(v, 1) if v is not None else None for k, v in pick.items()},
        "max": round(max(ms), 1) if ms else None,
        "n": len(ms),
    }


# ---- the API --------------------------------------------------------------------------------
async def start_api(stack: Stack) -> str:
    """`igny8 api` in its own process, wired to the stack; its base URL once healthy."""
    port = free_port()
    igny8 = str(Path(sys.executable).parent / "igny8")
    args = [igny8, "api", "--host", "127.0.0.1", "--port", str(port)]
    proc = stack.children.spawn("api", args, stack.child_env())
    url = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(wait_http, f"{url}{API}/health", proc, "the API", 60)
    return url


async def start_run(api: httpx.AsyncClient, site: Site) -> str:
    headers = {"Authorization": f"Bearer {site.api_key}"}
    started = await api.post(
        f"{API}/automation/runs", json={"site_id": site.site_id}, headers=headers
    )
    started.raise_for_status()
    return str(started.json()["run_id"])


# ---- the probe and the watchers ---------------------------------------------------------------
@dataclass
class Probe:
    """A diagnostic (off by default): a second querier of the run's progress, beside the
    API's one poller, polling every `interval_s`; it notes how long each query took."""

    interval_s: float
    query_s: list[float] = field(default_factory=list)

    async def run(self, stack: Stack, run_id: str, done: asyncio.Event) -> None:
        if self.interval_s <= 0:
            return
        handle = stack.client.get_workflow_handle_for(AutomationRunWorkflow.run, run_id)
        while not done.is_set():
            sent = time.time()
            with suppress(Exception):  # a continue-as-new moment or the end: go on
                await handle.query(AutomationRunWorkflow.progress)
                self.query_s.append(time.time() - sent)
            await asyncio.sleep(max(0.0, self.interval_s - (time.time() - sent)))


# ---- when the run's progress changed, from the rows it wrote -------------------------------
STAGE_ROWS = {
    "clustering": AUTO_CLUSTER.operation_type,
    "ideas": GENERATE_IDEAS.operation_type,
    "content": GENERATE_CONTENT.operation_type,
    "image_prompts": GENERATE_IMAGE_PROMPTS.operation_type,
}


@dataclass
class Milestones:
    """For each stage, when its done count reached 1, 2, 3, ...: the time of the row that
    made the n-th item count (its charge for a text stage, its writer task, its child
    batch's finish, its move to review). The workflow counts an item only after that row
    is written, so a snapshot showing these counts cannot have existed earlier. Likewise a
    text stage shows `completed` only once its task log is closed (`closed`)."""

    times: dict[str, list[float]]
    closed: dict[str, float] = field(default_factory=dict)  # text stage → its log closed

    def binding(self, snapshot: dict[str, Any], closes: bool = True) -> tuple[float, str] | None:
        """The latest of the moments this snapshot's counts (and closed stages) needed,
        and what needed it (None: no count yet)."""
        needed = [
            (self.times[st["name"]][st["done"] - 1], st["name"])
            for st in snapshot.get("stages", [])
            if 0 < st["done"] <= len(self.times.get(st["name"], []))
        ]
        if not needed or not closes:
            return max(needed, default=None)
        needed += [
            (self.closed[st["name"]], f"{st['name']} log closed")
            for st in snapshot.get("stages", [])
            if st["status"] in FINAL and st["name"] in self.closed
        ]
        return max(needed)


def milestones(stack: Stack, site: Site) -> Milestones:
    """Read the milestones of the run on `site` (its account has no other run)."""
    ts = lambda rows: sorted(t.timestamp() for t in rows)  # noqa: E731
    with stack.engine.connect() as conn:
        times = {
            stage: ts(
                conn.execute(
                    select(CreditUsageLog.created_at).where(
                        CreditUsageLog.account_id == site.account_id,
                        CreditUsageLog.operation_type == operation,
                    )
                ).scalars()
            )
            for stage, operation in STAGE_ROWS.items()
        }
        times["tasks"] = ts(
            conn.execute(select(Task.created_at).where(Task.site_id == site.site_id)).scalars()
        )
        children = conn.execute(
            select(ImageBatch.finished_at, ImageBatch.task_ids).where(
                ImageBatch.account_id == site.account_id, ImageBatch.finished_at.is_not(None)
            )
        ).all()
        times["images"] = sorted(t.timestamp() for t, tasks in children for _ in tasks)
        times["review"] = ts(
            conn.execute(
                select(Content.updated_at).where(
                    Content.site_id == site.site_id, Content.status.in_(("review", "approved"))
                )
            ).scalars()
        )
        logs = conn.execute(
            select(AITaskLog.payload, AITaskLog.updated_at).where(
                AITaskLog.account_id == site.account_id, AITaskLog.status != "running"
            )
        ).all()
    closed = {p["stage"]: t.timestamp() for p, t in logs if p.get("stage") in STAGE_ROWS}
    return Milestones(times, closed)


@dataclass
class Watcher:
    """One SSE subscriber: when each snapshot arrived (wall clock) and which it was."""

    arrivals: list[tuple[float, int]] = field(default_factory=list)
    error: str | None = None

    async def run(
        self, client: httpx.AsyncClient, path: str, key: str, texts: dict[int, str]
    ) -> None:
        headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
        try:
            async with client.stream("GET", path, headers=headers) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        now, text = time.time(), line[6:]
                        digest = hash(text)
                        texts.setdefault(digest, text)
                        self.arrivals.append((now, digest))
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"


# ---- one run -----------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    run_id: str
    wall_s: float
    status: str
    articles: int
    finished_at: float  # when the run's row was marked finished: the final change
    milestones: Milestones
    floor_s: float  # the run's lower bound from the calls it made (bench/automation.py)
    cpu: dict[str, Any]
    probe: Probe
    watchers: list[Watcher] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)


async def one_run(
    stack: Stack, api_url: str, site: Site, watchers: int, opts: argparse.Namespace
) -> RunOutcome:
    """Start a run through the API, watch it with `watchers` SSE clients (0: none) and
    the diagnostic probe if asked, and wait for the workflow's result."""
    limits = httpx.Limits(max_connections=watchers + 10, max_keepalive_connections=watchers + 10)
    timeout = httpx.Timeout(30, read=None)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=timeout) as api:
        before = cpu_mark(stack.children)
        started = time.time()
        run_id = await start_run(api, site)
        handle = stack.client.get_workflow_handle_for(AutomationRunWorkflow.run, run_id)
        done, probe = asyncio.Event(), Probe(opts.probe_interval)
        texts: dict[int, str] = {}
        subs = [Watcher() for _ in range(watchers)]
        path = f"{API}/automation/runs/{run_id}/events"
        tasks = [asyncio.create_task(w.run(api, path, site.api_key, texts)) for w in subs]
        probing = asyncio.create_task(probe.run(stack, run_id, done))
        try:
            result = await asyncio.wait_for(handle.result(), opts.timeout)
        finally:
            ended = time.time()
            done.set()
            await probing
            await finish_watchers(tasks)
        cpu = cpu_report(before, cpu_mark(stack.children))
    stages = {s.name: s for s in result.stages}
    articles = stages["content"].done
    floor_s = run_floor(stack, run_id, site, opts)
    return RunOutcome(
        run_id, ended - started, result.status, articles, row_finished(stack, run_id),
        milestones(stack, site), floor_s, cpu, probe, subs, texts,
    )  # fmt: skip


def run_floor(stack: Stack, run_id: str, site: Site, opts: argparse.Namespace) -> float:
    """The run's floor from the calls it made: the simulator's ideas come in twos or
    threes, so two runs over the same keywords differ in work, and wall / floor is what
    compares them fairly."""
    text_calls = sum(calls_by_function(stack.engine, run_id).values())
    with stack.engine.connect() as conn:
        images = conn.execute(
            select(func.count()).where(Image.site_id == site.site_id, Image.status == "generated")
        ).scalar_one()
    return float(floor(text_calls, images, opts)["floor_s"])


def row_finished(stack: Stack, run_id: str) -> float:
    """When the workflow marked the run's row finished (what the API answers from then)."""
    with stack.engine.connect() as conn:
        finished = conn.execute(
            select(AutomationRun.finished_at).where(AutomationRun.run_id == run_id)
        ).scalar_one()
    return float(finished.timestamp())


async def finish_watchers(tasks: list[asyncio.Task[None]], grace_s: float = 10) -> None:
    """Watchers end by themselves when the API sends the final snapshot; stragglers are
    cancelled after a grace period."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


# ---- the delays ------------------------------------------------------------------------------
@dataclass
class Delays:
    seconds: list[float] = field(default_factory=list)  # arrival − the change's earliest time
    unbounded: int = 0  # changes before any count moved (nothing dates them)
    # per distinct change: its largest delay, what moved and which stage's row dates it
    changes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def slowest(self, n: int = 5) -> list[dict[str, Any]]:
        return sorted(self.changes.values(), key=lambda c: -c["ms"])[:n]


def moved(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What differs between two snapshots' progress: stage counts and statuses."""
    old = {st["name"]: st for st in before.get("stages", [])}
    parts = []
    for st in after.get("stages", []):
        was = old.get(st["name"], {})
        for key in ("status", "done", "failed"):
            if was.get(key) != st.get(key):
                parts.append(f"{st['name']}.{key} {was.get(key)}->{st.get(key)}")
    if before.get("status") != after.get("status"):
        parts.append(f"run {before.get('status')}->{after.get('status')}")
    return "; ".join(parts) or "other fields"


def change_delays(outcome: RunOutcome, closes: bool = True) -> Delays:
    """Per watcher and progress change: arrival minus the earliest moment the new
    progress could exist (its milestones; for the final snapshot, which the API reads
    from the run's row, the time the row was marked finished): an upper bound."""
    snapshots = {d: json.loads(t) for d, t in outcome.texts.items()}
    keys = {d: progress_key(snap) for d, snap in snapshots.items()}
    out = Delays()
    for watcher in outcome.watchers:
        for n, (arrived, digest) in enumerate(watcher.arrivals):
            if n == 0 or keys[digest] == keys[watcher.arrivals[n - 1][1]]:
                continue  # sent on connect, or only the balance or live counts moved
            snap, previous = snapshots[digest], watcher.arrivals[n - 1][1]
            bound: tuple[float, str] | None
            if snap["status"] in FINAL:
                bound = (outcome.finished_at, "the run's row")
            else:
                bound = outcome.milestones.binding(snap, closes)
            if bound is None:
                out.unbounded += 1
                continue
            delay = arrived - bound[0]
            out.seconds.append(delay)
            change = out.changes.setdefault(
                (previous, digest),
                {"ms": 0.0, "moved": moved(snapshots[previous], snap), "dated_by": bound[1]},
            )
            change["ms"] = max(change["ms"], round(delay * 1000, 1))
    return out


def fan_out_delays(outcome: RunOutcome) -> list[float]:
    """Each arrival minus the earliest arrival of the same snapshot at any watcher
    (each watcher's first snapshot, sent on connect, left out)."""
    earliest: dict[int, float] = {}
    for watcher in outcome.watchers:
        for arrived, digest in watcher.arrivals[1:]:
            earliest[digest] = min(arrived, earliest.get(digest, arrived))
    return [
        arrived - earliest[digest]
        for watcher in outcome.watchers
        for arrived, digest in watcher.arrivals[1:]
    ]


def watched_report(outcome: RunOutcome) -> dict[str, Any]:
    delays = change_delays(outcome)
    finals = sum(
        1
        for w in outcome.watchers
        if w.arrivals and json.loads(outcome.texts[w.arrivals[-1][1]])["status"] in FINAL
    )
    return {
        "watchers": len(outcome.watchers),
        "watchers_with_errors": sum(1 for w in outcome.watchers if w.error),
        "watchers_that_saw_the_end": finals,
        "distinct_snapshots": len(outcome.texts),
        "snapshots_received": sum(len(w.arrivals) for w in outcome.watchers),
        "change_to_watcher_ms": spread(delays.seconds),
        "change_to_watcher_ms_item_rows_only": spread(change_delays(outcome, False).seconds),
        "changes_without_a_bound": delays.unbounded,
        "slowest_changes": delays.slowest(),
        "fan_out_spread_ms": spread(fan_out_delays(outcome)),
    }


def run_summary(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "run_id": outcome.run_id,
        "status": outcome.status,
        "articles": outcome.articles,
        "wall_s": round(outcome.wall_s, 3),
        "floor_s": outcome.floor_s,
        "wall_per_floor": round(outcome.wall_s / outcome.floor_s, 4),
        "probe_query_ms": spread(outcome.probe.query_s) if outcome.probe.query_s else None,
        "cpu": outcome.cpu,
    }


# ---- the invocation -----------------------------------------------------------------------------
async def measure(opts: argparse.Namespace) -> dict[str, Any]:
    sim_limit = opts.text_concurrency + opts.image_concurrency
    async with running_stack(
        opts.db, opts.workers, opts.text_latency, opts.image_latency, sim_limit, "watchers"
    ) as stack:
        seed_models(stack.engine, opts.text_concurrency, opts.image_concurrency)
        words = keyword_list(opts.keywords)
        sites = [
            seed_site(stack.engine, words[:n], opts.in_article_images, name)
            for name, n in (
                ("warm-up", WARMUP_KEYWORDS),
                ("unwatched", len(words)),
                ("watched", len(words)),
            )
        ]
        api_url = await start_api(stack)
        await one_run(stack, api_url, sites[0], 0, opts)
        unwatched = await one_run(stack, api_url, sites[1], 0, opts)
        watched = await one_run(stack, api_url, sites[2], opts.watchers, opts)
    ratio = watched.wall_s / unwatched.wall_s
    per_work = (watched.wall_s / watched.floor_s) / (unwatched.wall_s / unwatched.floor_s)
    return {
        "db": opts.db,
        "worker_processes": opts.workers,
        "keywords": opts.keywords,
        "text_latency_s": opts.text_latency,
        "image_latency_s": opts.image_latency,
        "text_concurrency": opts.text_concurrency,
        "image_concurrency": opts.image_concurrency,
        "probe_interval_s": opts.probe_interval,
        "unwatched": run_summary(unwatched),
        "watched": {**run_summary(watched), **watched_report(watched)},
        "wall_ratio": round(ratio, 4),
        "wall_ratio_per_work": round(per_work, 4),
    }


def summary(r: dict[str, Any]) -> list[str]:
    tag = f"[{r['db']}]"
    u, w = r["unwatched"], r["watched"]
    d, f = w["change_to_watcher_ms"], w["fan_out_spread_ms"]
    r0 = w["change_to_watcher_ms_item_rows_only"]
    probe = (
        f"; a second querier (probe) every {r['probe_interval_s']} s"
        if r["probe_interval_s"]
        else ""
    )
    lines = [
        f"{tag} {r['keywords']} keywords a run, {r['worker_processes']} worker processes, "
        f"API in its own process{probe}",
        f"{tag} unwatched: {u['wall_s']} s ({u['status']}, {u['articles']} articles, floor "
        f"{u['floor_s']} s); watched by {w['watchers']}: {w['wall_s']} s ({w['status']}, "
        f"{w['articles']} articles, floor {w['floor_s']} s)",
        f"{tag} watched vs unwatched: wall {(r['wall_ratio'] - 1) * 100:+.1f} %, per unit of "
        f"work (wall / floor) {(r['wall_ratio_per_work'] - 1) * 100:+.1f} % (goal within 5 %)",
        f"{tag} progress change -> watcher (upper bound): p50 {d['p50']} ms, p99 {d['p99']} ms, "
        f"max {d['max']} ms over {d['n']} deliveries (goal p99 < 500 ms); "
        f"{w['changes_without_a_bound']} changes before any count moved",
        f"{tag}   dated by the item rows alone (a text stage's completion by its last item, "
        f"not its task log's close): p50 {r0['p50']} ms, p99 {r0['p99']} ms, max {r0['max']} ms",
        f"{tag}   slowest changes: "
        + "; ".join(
            f"{c['moved']} {c['ms']} ms (by {c['dated_by']})" for c in w["slowest_changes"][:3]
        ),
        f"{tag} fan-out spread (arrival - first arrival): p50 {f['p50']} ms, p99 {f['p99']} ms, "
        f"max {f['max']} ms; {w['distinct_snapshots']} distinct snapshots, "
        f"{w['snapshots_received']} received, {w['watchers_that_saw_the_end']}/{w['watchers']} "
        f"saw the end, {w['watchers_with_errors']} errors",
    ]
    if u["probe_query_ms"] and w["probe_query_ms"]:
        qu, qw = u["probe_query_ms"], w["probe_query_ms"]
        lines.append(
            f"{tag} the probe's progress queries: p50 {qu['p50']} / p99 {qu['p99']} / max "
            f"{qu['max']} ms unwatched, p50 {qw['p50']} / p99 {qw['p99']} / max {qw['max']} ms "
            "watched (beside the API's poller)"
        )
    lines += [
        f"{tag} CPU s unwatched {u['cpu']['cpu_s']}",
        f"{tag} CPU s watched   {w['cpu']['cpu_s']}",
    ]
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--db", choices=["postgres", "sqlite"], default="postgres")
    add("--watchers", type=int, default=100, help="SSE clients on the watched run")
    add("--keywords", type=int, default=300, help="keywords per measured run")
    add("--text-latency", type=float, default=1.0, help="seconds per chat completion")
    add("--image-latency", type=float, default=2.0, help="seconds per image generation")
    add("--text-concurrency", type=int, default=20, help="the text model's max_concurrency")
    add("--image-concurrency", type=int, default=20, help="the image model's max_concurrency")
    add("--in-article-images", type=int, default=1, help="images per article besides the featured")
    add("--workers", type=int, default=2, help="worker processes, as `igny8 up` runs them")
    add(
        "--probe-interval",
        type=float,
        default=0.0,
        help="a diagnostic: a second querier of the run's progress every this many seconds "
        "in both runs, to see what it does to the API's queries (0: none)",
    )
    add("--timeout", type=float, default=600, help="give up on a run after this many seconds")
    return parser.parse_args()


def main() -> None:
    opts = parse_args()
    try:
        results = asyncio.run(cancellable(measure(opts)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: child processes stopped, temporary database removed")
        raise SystemExit(130) from None
    out = ROOT / "bench" / "results" / "watchers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for line in summary(results):
        print(line)
    print(f"[{opts.db}] written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
