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

  Delay from a progress change to each watcher (goal: p99 < 500 ms). The workflow dates
  each change of its progress by the workflow time of the task that made it (which is
  the task's start, so a delay is, if anything, counted too long), and numbers it: each
  snapshot carries its progress's version. After the run the bench asks every execution
  of the run (it continues-as-new) when each version happened (the `progress_changes`
  query; asked after the run, so the asking does not slow the API's own queries). A
  watcher that saw version a and then b saw changes a+1..b with that snapshot: each
  counts, with its own delay, so changes the API never showed on their own count by how
  long they waited for a later snapshot. The final snapshot, which the API reads from
  the run's row, shows every change up to the last. A watcher's first snapshot (sent on
  connect) is not a change. Reported: each (change, watcher) pair's delay; each change's
  delay to its first watcher (the API's part); and the fan-out spread, each arrival
  minus the earliest arrival of the same snapshot at any watcher (the sending alone).
  The watchers are plain sockets, as cheap per event as a browser (see `Watcher`).

  CPU seconds of the API, workers, Temporal, PostgreSQL, this process (the watchers) and
  everything else on the machine are printed for both runs, and the time the hypervisor
  took from this virtual machine's cores: on one 2-core machine the watchers' own
  parsing competes with the workers, which a real deployment would not see.

  --no-feed runs the stack with PROGRESS_FEED=false: the API then polls only, as on
  SQLite or behind PgBouncer (what the pushed progress notes save, in the same session).

Writes bench/results/watchers-<db>.json and prints a summary. Child processes, the Temporal
dev server and the temporary database are removed on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from models import Image  # noqa: E402
from workflows.automation_run import AutomationRunWorkflow  # noqa: E402

API = "/api/v1"
FINAL = {"completed", "cancelled", "failed"}
WARMUP_KEYWORDS = 20


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


@dataclass
class Watcher:
    """One SSE subscriber: when each snapshot arrived (wall clock) and which it was.

    A plain socket speaking HTTP/1.0 (the API then sends the stream unchunked, ended by
    closing the connection), split on the blank line that ends an event, as a browser's
    EventSource reads it. httpx's client cost this process, which shares the two cores
    with the stack, several times the CPU per event; once behind, every watcher's
    arrival was late by the backlog, up to 800 ms after the API had sent a snapshot."""

    arrivals: list[tuple[float, int]] = field(default_factory=list)
    error: str | None = None

    async def run(self, url: str, path: str, key: str, texts: dict[int, str]) -> None:
        parsed = httpx.URL(url)
        host, port = parsed.host, parsed.port
        request = (
            f"GET {path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            if status != b"200":
                raise RuntimeError(f"HTTP {status.decode()}: {head[:200]!r}")
            pending = b""
            while chunk := await reader.read(1 << 16):
                now = time.time()
                *events, pending = (pending + chunk).split(b"\n\n")
                for event in events:
                    start = event.find(b"data: ")
                    if start >= 0:
                        text = event[start + 6 :]
                        digest = hash(text)
                        if digest not in texts:
                            texts[digest] = text.decode()
                        self.arrivals.append((now, digest))
        except (OSError, RuntimeError, asyncio.IncompleteReadError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        except asyncio.CancelledError:
            self.error = "cancelled"
        finally:
            if writer is not None:
                writer.close()


# ---- one run -----------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    run_id: str
    wall_s: float
    status: str
    articles: int
    floor_s: float  # the run's lower bound from the calls it made (bench/automation.py)
    cpu: dict[str, Any]
    probe: Probe
    watchers: list[Watcher] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)
    change_times: dict[int, float] = field(default_factory=dict)  # version → when


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
        tasks = [asyncio.create_task(w.run(api_url, path, site.api_key, texts)) for w in subs]
        probing = asyncio.create_task(probe.run(stack, run_id, done))
        try:
            result = await asyncio.wait_for(handle.result(), opts.timeout)
        finally:
            ended = time.time()
            done.set()
            await probing
            await finish_watchers(tasks)
        cpu = cpu_report(before, cpu_mark(stack.children))
    changes = await change_times(stack, run_id) if watchers else {}
    stages = {s.name: s for s in result.stages}
    articles = stages["content"].done
    floor_s = run_floor(stack, run_id, site, opts)
    return RunOutcome(
        run_id, ended - started, result.status, articles, floor_s, cpu, probe, subs, texts,
        changes,
    )  # fmt: skip


async def change_times(stack: Stack, run_id: str) -> dict[int, float]:
    """When each change of the run's progress happened (version → epoch seconds), from
    every execution of the run (it continues-as-new): each dated its changes by the
    workflow time of the task that made them. Asked after the run, so the asking does
    not slow the API's own queries; a closed execution answers by replaying its history."""
    times: dict[int, float] = {}
    execution: str | None = None  # the latest first, then each one it continued
    while True:
        handle = stack.client.get_workflow_handle_for(
            AutomationRunWorkflow.run, run_id, run_id=execution
        )
        changes = await handle.query(AutomationRunWorkflow.progress_changes)
        for n, at in enumerate(changes.times):
            times[changes.first_version + n] = at.timestamp()
        async for event in handle.fetch_history_events():
            started = event.workflow_execution_started_event_attributes
            execution = started.continued_execution_run_id or None
            break
        if execution is None:
            return times


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
class Dated:
    """Per watcher and change of the run's progress: the arrival of the first snapshot
    that showed it minus when the workflow made it."""

    seconds: list[float] = field(default_factory=list)
    api: list[float] = field(default_factory=list)  # per change: first at any watcher
    missing: int = 0  # changes shown whose time the workflow did not give (none expected)
    slowest: list[dict[str, Any]] = field(default_factory=list)


def dated_delays(outcome: RunOutcome) -> Dated:
    """Exact delays: a snapshot carries the progress `version`, so a watcher that saw
    version a and then b saw changes a+1..b with it, each dated by the workflow (changes
    the API's poller skipped count too, by how long they waited for a later snapshot).
    The final snapshot, read from the run's row, shows every change up to the last."""
    times, out = outcome.change_times, Dated()
    snapshots = {d: json.loads(t) for d, t in outcome.texts.items()}
    last = max(times, default=0)
    first_seen: dict[int, float] = {}
    worst: dict[int, float] = {}
    shown_by: dict[int, int] = {}  # change → the version of the first snapshot showing it
    for watcher in outcome.watchers:
        seen: int | None = None
        for arrived, digest in watcher.arrivals:
            snap = snapshots[digest]
            version = last if snap["status"] in FINAL else int(snap.get("version") or 0)
            if seen is not None:
                for k in range(seen + 1, version + 1):
                    if k not in times:
                        out.missing += 1
                        continue
                    delay = arrived - times[k]
                    out.seconds.append(delay)
                    if arrived < first_seen.get(k, arrived + 1):
                        first_seen[k], shown_by[k] = arrived, version
                    worst[k] = max(delay, worst.get(k, delay))
            seen = version if seen is None else max(seen, version)
    out.api = [first_seen[k] - times[k] for k in first_seen]
    start = min(times.values(), default=0.0)
    out.slowest = [
        {
            "version": k,
            "ms": round(ms * 1000, 1),
            "at_s": round(times[k] - start, 3),
            "at_epoch": round(times[k], 4),
            "first_watcher_ms": round((first_seen[k] - times[k]) * 1000, 1),
            "shown_by": shown_by[k],
        }
        for k, ms in sorted(worst.items(), key=lambda kv: -kv[1])[:5]
    ]
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
    dated = dated_delays(outcome)
    finals = sum(
        1
        for w in outcome.watchers
        if w.arrivals and json.loads(outcome.texts[w.arrivals[-1][1]])["status"] in FINAL
    )
    return {
        "watchers": len(outcome.watchers),
        "watchers_with_errors": sum(1 for w in outcome.watchers if w.error),
        "changes": len(outcome.change_times),
        "change_to_watcher_ms": spread(dated.seconds),
        "change_to_first_watcher_ms": spread(dated.api),
        "changes_without_a_time": dated.missing,
        "slowest_dated_changes": dated.slowest,
        "watchers_that_saw_the_end": finals,
        "distinct_snapshots": len(outcome.texts),
        "snapshots_received": sum(len(w.arrivals) for w in outcome.watchers),
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
        "progress_feed": not opts.no_feed and opts.db == "postgres",  # NOTIFY is PostgreSQL's
        "unwatched": run_summary(unwatched),
        "watched": {**run_summary(watched), **watched_report(watched)},
        "wall_ratio": round(ratio, 4),
        "wall_ratio_per_work": round(per_work, 4),
    }


def summary(r: dict[str, Any]) -> list[str]:
    tag = f"[{r['db']}]"
    u, w = r["unwatched"], r["watched"]
    d, f = w["change_to_watcher_ms"], w["fan_out_spread_ms"]
    a = w["change_to_first_watcher_ms"]
    probe = (
        f"; a second querier (probe) every {r['probe_interval_s']} s"
        if r["probe_interval_s"]
        else ""
    )
    lines = [
        f"{tag} {r['keywords']} keywords a run, {r['worker_processes']} worker processes, "
        f"API in its own process{probe}; progress notes "
        f"{'pushed (PostgreSQL NOTIFY)' if r['progress_feed'] else 'off: the API polls only'}",
        f"{tag} unwatched: {u['wall_s']} s ({u['status']}, {u['articles']} articles, floor "
        f"{u['floor_s']} s); watched by {w['watchers']}: {w['wall_s']} s ({w['status']}, "
        f"{w['articles']} articles, floor {w['floor_s']} s)",
        f"{tag} watched vs unwatched: wall {(r['wall_ratio'] - 1) * 100:+.1f} %, per unit of "
        f"work (wall / floor) {(r['wall_ratio_per_work'] - 1) * 100:+.1f} % (goal within 5 %)",
        f"{tag} progress change -> watcher (each change dated by the workflow): p50 "
        f"{d['p50']} ms, p99 {d['p99']} ms, max {d['max']} ms over {d['n']} (change, watcher) "
        f"pairs, {w['changes']} changes (goal p99 < 500 ms); {w['changes_without_a_time']} "
        "shown without a time",
        f"{tag}   change -> first watcher (the note or the poll, the snapshot, the send): p50 {a['p50']} ms, "
        f"p99 {a['p99']} ms, max {a['max']} ms; slowest: "
        + "; ".join(
            f"v{c['version']} at {c['at_s']} s {c['ms']} ms" for c in w["slowest_dated_changes"][:3]
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
    add(
        "--no-feed",
        action="store_true",
        help="run the stack with PROGRESS_FEED=false: the API polls only (what the pushed "
        "progress notes save)",
    )
    add("--timeout", type=float, default=600, help="give up on a run after this many seconds")
    return parser.parse_args()


def main() -> None:
    opts = parse_args()
    if opts.no_feed:
        os.environ["PROGRESS_FEED"] = "false"  # the children's environment starts from ours
    try:
        results = asyncio.run(cancellable(measure(opts)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: child processes stopped, temporary database removed")
        raise SystemExit(130) from None
    out = ROOT / "bench" / "results" / f"watchers-{opts.db}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for line in summary(results):
        print(line)
    print(f"[{opts.db}] written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
