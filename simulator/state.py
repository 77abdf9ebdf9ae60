"""Per-app simulator state: config, seeded RNGs, in-flight accounting and counters.

One instance per app, so tests can run several simulators with different faults side by
side. Everything runs on the server's event loop, so plain ints are race-free.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from simulator import faults
from simulator.config import SimConfig
from simulator.faults import Fault
from simulator.images import ImageStore

UNSAFE_MARKER = "[unsafe]"
# A prompt containing this gets an answer that is not valid JSON (fault injection for the
# bounded retry of malformed output).
MALFORMED_MARKER = "[malformed]"
# Served requests kept for `GET /_sim/timeline` (benchmarks read where the time went).
TIMELINE_MAX = 100_000
# Endpoint names (the endpoints' `name`) that `chat_latency_s` / `images_latency_s` cover.
CHAT_ENDPOINTS = frozenset({"chat.completions"})
IMAGE_ENDPOINTS = frozenset({"images.generations", "runware"})
# The endpoint of the request being served. Each request runs in its own task, so this is
# that request's alone; it is noted where the pipeline counts the request, its first step.
_ENDPOINT: ContextVar[str | None] = ContextVar("simulator_endpoint", default=None)


class RequestCounter(Counter[str]):
    """Requests per endpoint. Counting a request also notes its endpoint for the rest of
    that request, so the latency can depend on it without the pipeline passing it on."""

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, value)
        _ENDPOINT.set(key)


@dataclass
class SimStats:
    """What happened, for tests and benchmarks (`GET /_sim/stats`)."""

    requests: Counter[str] = field(default_factory=RequestCounter)
    rejected_429: int = 0
    concurrency_429: int = 0
    injected_429: int = 0
    insufficient_quota: int = 0
    auth_failures: int = 0
    injected_500: int = 0
    injected_timeouts: int = 0
    policy_refusals: int = 0
    invalid_requests: int = 0
    completions: int = 0
    malformed_answers: int = 0
    images_generated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_in_flight: int = 0

    def as_dict(self, in_flight: int) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "requests"}
        data["requests"] = dict(self.requests)
        data["requests_total"] = sum(self.requests.values())
        data["in_flight"] = in_flight
        return data


class SimState:
    """Applies the fault pipeline in the documented order and keeps the counters."""

    def __init__(self, config: SimConfig) -> None:
        config.check()
        self.initial = config
        self.config = config
        self.stats = SimStats()
        self.in_flight = 0
        self.images = ImageStore()
        self.timeline: deque[tuple[str, float, float]] = deque(maxlen=TIMELINE_MAX)
        self._seed_rngs()

    def _seed_rngs(self) -> None:
        self.fault_rng = random.Random(self.config.seed)
        self.jitter_rng = random.Random(self.config.seed + 1)

    def configure(self, changes: dict[str, Any]) -> SimConfig:
        """Apply a partial update; a new seed restarts the fault sequence."""
        self.config = self.config.updated(changes)
        if "seed" in changes:
            self._seed_rngs()
        return self.config

    def reset(self, *, restore_config: bool = False) -> None:
        """Zero the counters and restart the RNG sequences (optionally the startup config)."""
        if restore_config:
            self.config = self.initial
        self.stats = SimStats()
        self.timeline.clear()
        self._seed_rngs()

    def served(self, endpoint: str, arrived: float, left: float) -> None:
        """Record one answered request (wall-clock seconds) for the timeline."""
        self.timeline.append((endpoint, arrived, left))

    # ---------------------------------------------------------------- the pipeline

    def gate(self, api_key: str | None) -> Fault | None:
        """Auth, quota, then the concurrency limit; on None the caller is in flight."""
        fault = self._auth(api_key) or self._quota() or self._concurrency()
        if fault is None:
            self.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.in_flight)
        return fault

    def leave(self) -> None:
        self.in_flight -= 1

    def _auth(self, api_key: str | None) -> Fault | None:
        if not api_key or api_key.startswith("sk-invalid"):
            self.stats.auth_failures += 1
            return faults.auth_fault()
        return None

    def _quota(self) -> Fault | None:
        if self.config.insufficient_quota:
            self.stats.insufficient_quota += 1
            return faults.quota_fault()
        return None

    def _concurrency(self) -> Fault | None:
        limit = self.config.max_concurrency
        if limit > 0 and self.in_flight >= limit:
            self.stats.concurrency_429 += 1
            self.stats.rejected_429 += 1
            return faults.rate_limit_fault(
                self.config.retry_after_s, "too many concurrent requests"
            )
        return None

    async def random_fault(self) -> Fault | None:
        """One seeded draw decides 429, 500, a hang (then a normal answer), or nothing."""
        cfg = self.config
        draw = self.fault_rng.random()
        if draw < cfg.rate_429:
            self.stats.injected_429 += 1
            self.stats.rejected_429 += 1
            return faults.rate_limit_fault(cfg.retry_after_s, "requests per minute")
        if draw < cfg.rate_429 + cfg.rate_500:
            self.stats.injected_500 += 1
            return faults.server_fault()
        if draw < cfg.rate_429 + cfg.rate_500 + cfg.rate_timeout:
            self.stats.injected_timeouts += 1
            await asyncio.sleep(cfg.timeout_hang_s)
        return None

    def policy(self, prompt_text: str) -> Fault | None:
        if UNSAFE_MARKER in prompt_text.lower():
            self.stats.policy_refusals += 1
            return faults.policy_fault()
        return None

    def invalid(self, fault: Fault) -> Fault:
        self.stats.invalid_requests += 1
        return fault

    def latency_of(self, endpoint: str | None) -> float:
        """The endpoint's latency: its own knob when set, else `latency_s`."""
        cfg = self.config
        if endpoint in CHAT_ENDPOINTS and cfg.chat_latency_s is not None:
            return cfg.chat_latency_s
        if endpoint in IMAGE_ENDPOINTS and cfg.images_latency_s is not None:
            return cfg.images_latency_s
        return cfg.latency_s

    async def latency(self, since: float | None = None, endpoint: str | None = None) -> None:
        """Sleep until the endpoint's latency (plus jitter) has passed since `since`
        (the request's arrival), so a response never takes less, nor much more. The
        endpoint defaults to the one the current request was counted under."""
        delay = self.latency_of(endpoint or _ENDPOINT.get())
        if self.config.latency_jitter_s > 0:
            delay += self.jitter_rng.uniform(0, self.config.latency_jitter_s)
        if since is not None:
            delay -= asyncio.get_running_loop().time() - since
        if delay > 0:
            await asyncio.sleep(delay)
