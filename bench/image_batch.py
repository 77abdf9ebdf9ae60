"""Benchmark: image batches through the whole chain (plan, reserve, generate, store,
deduct, log, notify) on a real Temporal dev server, against the simulator.

    .venv/bin/python bench/image_batch.py [--db sqlite|postgres] [--images 200]
        [--latency 1.0] [--concurrency 20] [--throughput-images 1000] [--sequential-images N]
        [--batches 3] [--throughput-rounds 3] [--no-warm-up] [--workers 2]

A warm-up batch (2×C images at zero latency, not measured) goes first, as in
bench/watchers.py: a deployment's workers are long-lived, and a fresh process's first
imports, connections and caches are paid once, not per batch (--no-warm-up measures them).

Three measurements, each against a baseline taken in the same run:
1. efficiency = floor / actual, floor = ceil(N / C) × L   (goal ≥ 0.92); with --batches K
   the N images are split over K batches started together on one model, whose
   max_concurrency C holds for all of them: floor = ceil(ΣN / C) × L (goal ≥ 0.90)
2. speedup over the plan's loop: the same images one at a time, generate → store → deduct
   with no Temporal (goal ≥ 15×)
3. images per second with a zero-latency simulator (goal ≥ 100 on PostgreSQL): the
   median of --throughput-rounds batches, with the machine's CPU per image
Writes bench/results/image_batch-<db>.json and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlmodel import Session  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from bench.automation import cancellable, machine_cpu  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.temporal import DATA_CONVERTER, SEARCH_ATTRIBUTES, temporal_binary  # noqa: E402
from domain.accounts import create_account  # noqa: E402
from domain.ledger import Ledger, Usage  # noqa: E402
from domain.reconcile import reconcile  # noqa: E402
from models import AIModelConfig, BillingConfiguration, Content, Site, Task  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.migrate import upgrade  # noqa: E402
from providers.registry import ProviderRegistry  # noqa: E402
from tests.dbs import LOCAL_PG, create_pg_database, drop_pg_database  # noqa: E402
from worker import build_worker  # noqa: E402
from workflows.client import start_image_batch  # noqa: E402

MODEL = "bench-image"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Simulator:
    """The simulator in its own process, so it never competes with the worker's GIL."""

    def __init__(self, latency: float, concurrency: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulator",
                "--port",
                str(self.port),
                "--latency",
                str(latency),
                "--max-concurrency",
                str(concurrency),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("simulator did not start")

    def configure(self, **changes: object) -> None:
        httpx.post(f"{self.url}/_sim/config", json=changes, timeout=5).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_sim/stats", timeout=5).json()

    def timeline(self) -> list[dict]:
        return httpx.get(f"{self.url}/_sim/timeline", timeout=30).json()["requests"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def seed(engine, n_images: int, concurrency: int) -> tuple[int, list[int]]:
    """An account with plenty of credits and n_images tasks with content (1 image each)."""
    with Session(engine) as s:
        s.add(BillingConfiguration(default_credit_price_usd=Decimal("0.01")))
        s.add(
            AIModelConfig(
                model_name=MODEL,
                provider="openai",
                model_type="image",
                cost_per_image=Decimal("0.04"),
                credits_per_image=1,
                max_concurrency=concurrency,
            )
        )
        s.commit()
    acct = create_account(engine, "bench", n_images * 10).id
    with Session(engine) as s:
        site = Site(account_id=acct, name="bench", max_in_article_images=0)
        s.add(site)
        s.flush()
        ids = []
        for i in range(n_images):
            task = Task(account_id=acct, site_id=site.id, title=f"Bench article {i}")
            s.add(task)
            s.flush()
            s.add(
                Content(
                    account_id=acct,
                    site_id=site.id,
                    task_id=task.id,
                    title=task.title,
                    html=f"<h2>Part {i}</h2>",
                )
            )
            ids.append(task.id)
        s.commit()
    return acct, ids


def extra_worker(env: WorkflowEnvironment, settings: Settings) -> subprocess.Popen:
    """One more `python worker.py` on the same task queue: how a deployment scales out."""
    worker_env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": settings.database_url,
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TASK_QUEUE": settings.task_queue,
        "SIMULATOR_PORT": str(settings.simulator_port),
        "MEDIA_DIR": str(settings.media_dir),
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=worker_env)


def breakdown(rows: list[dict], started: float, ended: float, waves: int, latency: float) -> dict:
    """Where the time went, from the simulator's timeline (wall clock): before the first
    provider call, after the last answer, and the mean gap per wave in between."""
    images = [r for r in rows if r["endpoint"] == "images.generations" and r["arrived"] >= started]
    if not images:
        return {}
    first = min(r["arrived"] for r in images)
    last = max(r["left"] for r in images)
    between = last - first - waves * latency
    return {
        "start_s": round(first - started, 3),
        "finish_s": round(ended - last, 3),
        "gap_per_wave_s": round(between / max(1, waves - 1), 3),
        "handoff_ms": handoffs(images),
    }


def handoffs(images: list[dict]) -> dict:
    """How long a provider slot stood idle between one call's answer and the next call:
    each arrival after the first wave is matched to the earliest unmatched departure."""
    departures = sorted(r["left"] for r in images)
    arrivals = sorted(r["arrived"] for r in images)
    first_wave = len(images) - len(departures)  # recomputed below
    concurrency = 0
    in_flight = 0
    events = sorted([(a, 1) for a in arrivals] + [(d, -1) for d in departures])
    for _, kind in events:
        in_flight += kind
        concurrency = max(concurrency, in_flight)
    first_wave = concurrency
    gaps = [
        (arrival - departure) * 1000
        for arrival, departure in zip(arrivals[first_wave:], departures, strict=False)
    ]
    if not gaps:
        return {}
    gaps.sort()
    pick = lambda q: round(gaps[min(len(gaps) - 1, int(q * len(gaps)))], 1)  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "max": round(gaps[-1], 1)}


async def run_batch(env, task_queue, acct, task_ids, batches: int = 1) -> tuple[float, object]:
    """Start `batches` batches over the tasks at once; the time until the last finishes,
    and one result summing them."""
    start = time.perf_counter()
    handles = await asyncio.gather(
        *(
            start_image_batch(
                env.client,
                task_queue,
                account_id=acct,
                task_ids=task_ids[i::batches],
                model=MODEL,
                max_in_article_images=0,
            )
            for i in range(batches)
        )
    )
    results = await asyncio.gather(*(h.result() for h in handles))
    elapsed = time.perf_counter() - start
    if os.environ.get("BENCH_HISTORY"):
        await print_start_of_history(handles[0])
    statuses = {r.status for r in results}
    summed = results[0].model_copy(
        update={
            "status": statuses.pop() if len(statuses) == 1 else "mixed",
            "images_done": sum(r.images_done for r in results),
        }
    )
    return elapsed, summed


async def print_start_of_history(handle) -> None:
    """Debugging aid (BENCH_HISTORY=1): when each of the first events happened."""
    events = [e async for e in handle.fetch_history_events()]
    t0 = events[0].event_time.ToDatetime()
    for e in events[:40]:
        ms = (e.event_time.ToDatetime() - t0).total_seconds() * 1000
        print(f"{ms:8.1f} ms  {e.event_id:4d} {e.event_type}")


async def throughput_round(env, acct: int, t_ids: list[int]) -> dict:
    """One zero-latency batch: images/s, and CPU per image of the whole machine (every
    process: the figure noise moves least) and of this process (its in-process worker)."""
    busy_before, own_before = machine_cpu()[0], time.process_time()
    elapsed, tres = await run_batch(env, "bench", acct, t_ids)
    busy = machine_cpu()[0] - busy_before
    own = time.process_time() - own_before
    done = max(1, tres.images_done)
    return {
        "seconds": round(elapsed, 3),
        "images_per_s": round(tres.images_done / elapsed, 1),
        "machine_cpu_ms_per_image": round(1000 * busy / done, 2),
        "bench_process_cpu_ms_per_image": round(1000 * own / done, 2),
        "status": tres.status,
    }


def sequential_loop(engine, sim_url: str, acct: int, n: int, media: Path) -> float:
    """The plan's loop: for each image, generate, store, deduct — one at a time."""

    async def loop() -> float:
        providers = ProviderRegistry(simulator_url=sim_url, timeout_s=120)
        provider = providers.image("openai")
        ledger = Ledger(engine)
        media.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        for i in range(n):
            img = await provider.generate_image(model=MODEL, prompt=f"Sequential image {i}")
            (media / f"seq-{i}.png").write_bytes(img.data)
            await asyncio.to_thread(
                ledger.deduct,
                acct,
                1,
                f"seq:{i}",
                Usage(
                    operation_type="image_generation", cost_usd=Decimal("0.04"), model_name=MODEL
                ),
            )
        elapsed = time.perf_counter() - start
        await providers.aclose()
        return elapsed

    return asyncio.run(loop())


def database(kind: str, tmp: Path) -> tuple[str, callable]:
    if kind == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
        upgrade(url)
        return url, lambda: None
    url = create_pg_database(LOCAL_PG)
    return url, lambda: drop_pg_database(LOCAL_PG, url)


async def measure(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="igny8-bench-"))
    url, drop = database(args.db, tmp)
    engine = make_engine(url, pool_size=40)
    sim = Simulator(args.latency, args.concurrency)
    env = await WorkflowEnvironment.start_local(
        data_converter=DATA_CONVERTER,
        dev_server_existing_path=temporal_binary(),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    settings = Settings(
        environment="test",
        database_url=url,
        media_dir=tmp / "media",
        simulator_port=sim.port,
        task_queue="bench",
        provider_timeout_s=120,
    )
    providers = ProviderRegistry.from_settings(settings)
    results: dict = {"db": args.db, "worker_processes": args.workers}
    extra = [extra_worker(env, settings) for _ in range(args.workers - 1)]
    try:
        with ThreadPoolExecutor(max_workers=settings.activity_concurrency) as pool:
            async with build_worker(env.client, settings, engine, providers, pool):
                warm_n = 2 * args.concurrency if args.warm_up else 0
                thr_n = args.throughput_images * args.throughput_rounds
                acct, ids = seed(engine, warm_n + args.images + thr_n, args.concurrency)
                warm_ids, ids = ids[:warm_n], ids[warm_n:]
                batch_ids = ids[: args.images]
                if not batch_ids:
                    raise SystemExit("--images must be at least 1")
                if warm_ids:  # not measured: imports, connections and caches of each worker
                    sim.configure(latency_s=0.0)
                    await run_batch(env, "bench", acct, warm_ids)
                    sim.configure(latency_s=args.latency)
                wall_start = time.time()
                actual, res = await run_batch(env, "bench", acct, batch_ids, args.batches)
                waves = math.ceil(args.images / args.concurrency)
                floor = waves * args.latency
                results["efficiency"] = {
                    "images": args.images,
                    "batches": args.batches,
                    "latency_s": args.latency,
                    "concurrency": args.concurrency,
                    "floor_s": floor,
                    "actual_s": round(actual, 3),
                    "efficiency": round(floor / actual, 3),
                    "status": res.status,
                    "images_done": res.images_done,
                    "sim_429s": sim.stats().get("rejected_429", 0),
                    "breakdown": breakdown(
                        sim.timeline(), wall_start, wall_start + actual, waves, args.latency
                    ),
                }
                seq_n = args.sequential_images or args.images
                seq = await asyncio.to_thread(
                    sequential_loop, engine, sim.url, acct, seq_n, tmp / "seq"
                )
                seq_full = seq * args.images / seq_n
                results["sequential"] = {
                    "images_run": seq_n,
                    "seconds": round(seq, 3),
                    "seconds_for_all": round(seq_full, 3),
                    "speedup": round(seq_full / actual, 2),
                }
                if args.throughput_images:
                    sim.configure(latency_s=0.0, max_concurrency=0)
                    with Session(engine) as s:
                        cfg = s.get(AIModelConfig, 1)
                        cfg.max_concurrency = args.throughput_concurrency
                        s.add(cfg)
                        s.commit()
                    rounds = [
                        await throughput_round(
                            env, acct, ids[args.images :][i :: args.throughput_rounds]
                        )
                        for i in range(args.throughput_rounds)
                    ]
                    results["throughput"] = {
                        "images": args.throughput_images,
                        "concurrency": args.throughput_concurrency,
                        "rounds": rounds,
                        # the medians: one round moves by a quarter on this kind of machine
                        "images_per_s": statistics.median(r["images_per_s"] for r in rounds),
                        "machine_cpu_ms_per_image": statistics.median(
                            r["machine_cpu_ms_per_image"] for r in rounds
                        ),
                        "status": ",".join(sorted({r["status"] for r in rounds})),
                    }
        results["reconcile_breaches"] = len(reconcile(engine))
    finally:
        for proc in extra:
            proc.terminate()
            proc.wait(30)
        await providers.aclose()
        await env.shutdown()
        sim.stop()
        engine.dispose()
        drop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--images", type=int, default=200, help="N for the efficiency run")
    parser.add_argument("--latency", type=float, default=1.0, help="L: simulator seconds per image")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=20,
        help="C: the model's max_concurrency and the simulator's limit",
    )
    parser.add_argument(
        "--sequential-images",
        type=int,
        default=0,
        help="images for the one-at-a-time baseline (0 = all N; fewer are extrapolated)",
    )
    parser.add_argument(
        "--throughput-images",
        type=int,
        default=1000,
        help="images for the zero-latency run (0 skips)",
    )
    parser.add_argument("--throughput-concurrency", type=int, default=64)
    parser.add_argument(
        "--throughput-rounds",
        type=int,
        default=3,
        help="zero-latency batches, one after another; the median is the figure",
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=1,
        help="split the N images over this many batches started at once on one model",
    )
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="skip the warm-up batch (2×C images, zero latency, not measured) that runs "
        "first, so the measured run does not pay each worker process's first imports, "
        "database connections and caches",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes on the task queue, as `igny8 up` runs them (1 = in-process only)",
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # SIGTERM cancels the run like Ctrl-C: the workers, Temporal, the simulator and the
    # database are removed either way
    results = asyncio.run(cancellable(measure(args)))
    suffix = f"-{args.batches}batches" if args.batches > 1 else ""
    out = ROOT / "bench" / "results" / f"image_batch-{args.db}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    eff, seq = results["efficiency"], results["sequential"]
    print(f"[{args.db}] worker processes: {args.workers}")
    goal = "0.90, combined floor" if args.batches > 1 else "0.92"
    print(
        f"[{args.db}] efficiency ({args.batches} batch(es), {eff['images']} images): floor "
        f"{eff['floor_s']} s / actual {eff['actual_s']} s = {eff['efficiency']:.3f} "
        f"(goal >= {goal}; {eff['sim_429s']} 429s)"
    )
    if eff["breakdown"]:
        b = eff["breakdown"]
        print(
            f"[{args.db}]   overhead: {b['start_s']} s before the first provider call, "
            f"{b['gap_per_wave_s']} s between waves, {b['finish_s']} s after the last answer; "
            f"slot idle between calls (ms): {b['handoff_ms']}"
        )
    print(
        f"[{args.db}] one at a time: {seq['seconds_for_all']} s for {eff['images']} images -> "
        f"speedup {seq['speedup']}x (goal >= 15x; measured on {seq['images_run']} images)"
    )
    if "throughput" in results:
        thr = results["throughput"]
        each = ", ".join(str(r["images_per_s"]) for r in thr["rounds"])
        print(
            f"[{args.db}] zero latency: {thr['images']} images × {len(thr['rounds'])} rounds: "
            f"{each} images/s, median {thr['images_per_s']} (goal >= 100); machine CPU "
            f"{thr['machine_cpu_ms_per_image']} ms per image (median)"
        )
    print(
        f"[{args.db}] reconcile breaches: {results['reconcile_breaches']}; written {out.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
