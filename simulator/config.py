"""Runtime knobs of the simulator: latency, a concurrency limit and fault injection.

A plain dataclass so tests, the CLI and `POST /_sim/config` all speak the same fields.
`latency_s` is every call's latency; `chat_latency_s` / `images_latency_s` (unset: None)
override it for chat completions or for image generation (OpenAI and Runware), since real
providers answer text and images at very different speeds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

_RATE_FIELDS = ("rate_429", "rate_500", "rate_timeout")


@dataclass
class SimConfig:
    """Defaults give a fast, fault-free OpenAI; raise the knobs to rehearse bad days."""

    latency_s: float = 0.0
    chat_latency_s: float | None = None  # None: latency_s
    images_latency_s: float | None = None  # None: latency_s (OpenAI images and Runware)
    latency_jitter_s: float = 0.0
    max_concurrency: int = 0  # 0 = unlimited
    retry_after_s: float = 1.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0
    timeout_hang_s: float = 30.0
    insufficient_quota: bool = False
    seed: int = 7
    image_size: int = 64  # pixels of the longest side of the drawn PNG

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, changes: dict[str, Any]) -> SimConfig:
        """A validated copy with `changes` applied; raises ValueError naming the bad field."""
        known = {f.name: f for f in fields(self)}
        coerced: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown config field {name!r}; known: {sorted(known)}")
            coerced[name] = _coerce(name, known[name].type, value)
        new = replace(self, **coerced)
        new.check()
        return new

    def check(self) -> None:
        """Reject values that would make the simulator misbehave rather than misbehave."""
        for name in ("latency_s", "latency_jitter_s", "retry_after_s", "timeout_hang_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("chat_latency_s", "images_latency_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 (or null: latency_s)")
        for name in _RATE_FIELDS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if sum(getattr(self, name) for name in _RATE_FIELDS) > 1.0:
            raise ValueError("rate_429 + rate_500 + rate_timeout must be <= 1")
        if self.max_concurrency < 0:
            raise ValueError("max_concurrency must be >= 0")
        if not 1 <= self.image_size <= 2048:
            raise ValueError("image_size must be between 1 and 2048")


def _coerce(name: str, type_name: Any, value: Any) -> Any:
    kind = str(type_name)
    if kind.endswith(" | None"):  # optional: null clears it, anything else is coerced
        if value is None:
            return None
        kind = kind.removesuffix(" | None")
    try:
        if kind == "bool":
            return _as_bool(value)
        if kind == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {value!r} is not a valid {kind}") from exc
    return value


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "true",
        "1",
        "yes",
        "on",
        "false",
        "0",
        "no",
        "off",
    ):
        return value.lower() in ("true", "1", "yes", "on")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError
