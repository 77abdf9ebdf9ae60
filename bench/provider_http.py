"""Benchmark: CPU per provider call, the OpenAI SDK over its default httpx pool against the
SDK over aiohttp (its `aiohttp` extra, which igny8's provider uses), in the same run.

    .venv/bin/python bench/provider_http.py [--calls 2000] [--concurrency 64] [--rounds 3]

Why: at zero provider latency the workers are CPU-bound, and a py-spy profile put about a
fifth of a worker's CPU in the SDK's request path, much of it in the httpx pool checking
every idle connection on each request. Both clients call the simulator (its own process,
zero latency) with `images.generate`, `--concurrency` calls at a time, after a warm-up;
the figure is this process's CPU seconds (user + system) per call, each client measured
`--rounds` times in turn. Prints the ratio default / aiohttp (higher: aiohttp cheaper) and
writes bench/results/provider_http.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.image_batch import Simulator  # noqa: E402

WARM_UP_CALLS = 200


def make_client(kind: str, base_url: str) -> openai.AsyncOpenAI:
    extra = {"http_client": openai.DefaultAioHttpClient(timeout=30)} if kind == "aiohttp" else {}
    return openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0, **extra)


async def cpu_per_call(kind: str, base_url: str, calls: int, concurrency: int) -> float:
    """Milliseconds of this process's CPU per call, after a warm-up."""
    client = make_client(kind, base_url)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            answer = await client.images.generate(model="bench-image", prompt=f"bench {i}", n=1)
            assert answer.data and answer.data[0].b64_json

    try:
        await asyncio.gather(*(one(i) for i in range(WARM_UP_CALLS)))
        started = time.process_time()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return 1000 * (time.process_time() - started) / calls
    finally:
        await client.close()


async def measure(args: argparse.Namespace, base_url: str) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {"httpx": [], "aiohttp": []}
    for _ in range(args.rounds):
        for kind in runs:
            runs[kind].append(await cpu_per_call(kind, base_url, args.calls, args.concurrency))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per round")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each client")
    args = parser.parse_args()
    sim = Simulator(latency=0.0, concurrency=0)  # zero latency, no limit
    try:
        runs = asyncio.run(measure(args, f"{sim.url}/v1"))
    finally:
        sim.stop()
    default, aio = statistics.median(runs["httpx"]), statistics.median(runs["aiohttp"])
    results = {
        "calls_per_round": args.calls,
        "concurrency": args.concurrency,
        "cpu_ms_per_call": {k: [round(v, 3) for v in vs] for k, vs in runs.items()},
        "median_ms": {"httpx": round(default, 3), "aiohttp": round(aio, 3)},
        "ratio_httpx_over_aiohttp": round(default / aio, 2),
    }
    out = ROOT / "bench" / "results" / "provider_http.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(
        f"CPU per images.generate call ({args.calls} calls, {args.concurrency} in flight, "
        f"median of {args.rounds}): default httpx pool {default:.2f} ms, aiohttp {aio:.2f} ms "
        f"-> {default / aio:.2f}x less CPU with aiohttp; written {out.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
