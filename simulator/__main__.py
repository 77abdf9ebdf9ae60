"""`python -m simulator`: an OpenAI/Runware-compatible server for local runs and benchmarks.

Point igny8 at it with no OPENAI_API_KEY set (the default), or any OpenAI client with
base_url=http://HOST:PORT/v1 and any key not starting with "sk-invalid".
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from simulator.config import SimConfig

_EPILOG = """\
endpoints:
  POST /v1/chat/completions   structured JSON answers (auto_cluster, generate_ideas,
                              generate_content, generate_image_prompts)
  POST /v1/images/generations PNG as b64_json (default) or URL
  POST /runware/v1            Runware imageInference tasks (cost 0.0013 USD per image)
  GET/POST /_sim/config       read or change these options at runtime
  GET /_sim/stats, POST /_sim/reset, GET /health

examples:
  python -m simulator --port 8299
  python -m simulator --latency 0.5 --jitter 0.2 --max-concurrency 20 --rate-429 0.1
  python -m simulator --chat-latency 1.0 --images-latency 2.0
  curl -XPOST localhost:8299/_sim/config -d '{"rate_500": 0.2}'
"""


def build_parser() -> argparse.ArgumentParser:
    defaults = SimConfig()
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Deterministic OpenAI/Runware simulator with latency and fault injection.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    add("--port", type=int, default=8299, help="port to listen on (default: %(default)s)")
    add("--latency", type=float, default=defaults.latency_s, help="seconds added to each call")
    add(
        "--chat-latency",
        type=float,
        default=defaults.chat_latency_s,
        help="seconds per chat completion, instead of --latency (default: --latency)",
    )
    add(
        "--images-latency",
        type=float,
        default=defaults.images_latency_s,
        help="seconds per image generation (OpenAI and Runware), instead of --latency "
        "(default: --latency)",
    )
    add(
        "--jitter",
        type=float,
        default=defaults.latency_jitter_s,
        help="extra random latency, uniform in [0, JITTER] seconds",
    )
    add(
        "--max-concurrency",
        type=int,
        default=defaults.max_concurrency,
        help="in-flight requests allowed before answering 429 (0 = unlimited)",
    )
    add(
        "--retry-after",
        type=float,
        default=defaults.retry_after_s,
        help="seconds sent in Retry-After / retry-after-ms on 429s (default: %(default)s)",
    )
    add("--rate-429", type=float, default=defaults.rate_429, help="share of calls answered 429")
    add("--rate-500", type=float, default=defaults.rate_500, help="share of calls answered 500")
    add(
        "--rate-timeout",
        type=float,
        default=defaults.rate_timeout,
        help="share of calls that hang for --timeout-hang seconds before answering",
    )
    add(
        "--timeout-hang",
        type=float,
        default=defaults.timeout_hang_s,
        help="how long a 'timeout' call hangs (default: %(default)s)",
    )
    add(
        "--insufficient-quota",
        action="store_true",
        help="answer every call 429 insufficient_quota (an account with no credit)",
    )
    add("--seed", type=int, default=defaults.seed, help="seed of the fault RNG")
    add(
        "--image-size",
        type=int,
        default=defaults.image_size,
        help="longest side in pixels of the generated PNGs (default: %(default)s)",
    )
    add("--log-level", default="warning", help="uvicorn log level (default: %(default)s)")
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    config = SimConfig(
        latency_s=args.latency,
        chat_latency_s=args.chat_latency,
        images_latency_s=args.images_latency,
        latency_jitter_s=args.jitter,
        max_concurrency=args.max_concurrency,
        retry_after_s=args.retry_after,
        rate_429=args.rate_429,
        rate_500=args.rate_500,
        rate_timeout=args.rate_timeout,
        timeout_hang_s=args.timeout_hang,
        insufficient_quota=args.insufficient_quota,
        seed=args.seed,
        image_size=args.image_size,
    )
    config.check()
    return config


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    from simulator.server import run  # deferred: --help should not import uvicorn

    print(f"igny8 simulator on http://{args.host}:{args.port}  (OpenAI base URL: /v1)")
    run(args.host, args.port, config, log_level=args.log_level)


if __name__ == "__main__":
    main()
