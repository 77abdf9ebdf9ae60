"""Helpers shared by the simulator and provider tests (no fixtures here: pytest owns those)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from simulator.config import SimConfig
from simulator.server import SimulatorThread

KEYWORDS = [
    "best coffee grinder",
    "coffee grinder reviews",
    "burr coffee grinder",
    "manual coffee grinders",
    "how to make cold brew",
    "cold brew ratio",
    "cold brew concentrate",
    "espresso machine for home",
    "best espresso machines",
    "french press coffee",
    "how to clean a french press",
    "pour over kettle",
]


@contextmanager
def running_simulator(config: SimConfig | None = None) -> Iterator[SimulatorThread]:
    """A simulator on a free port for the duration of the block."""
    sim = SimulatorThread(config).start()
    try:
        yield sim
    finally:
        sim.stop()


@contextmanager
def closed_port() -> Iterator[int]:
    """A port nothing listens on, for connection-refused tests. The socket stays bound (not
    listening) for the whole block, so no other process can take the port meanwhile, and a
    connect to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def cluster_prompt(keywords: list[str]) -> str:
    return "Group these keywords into topic clusters.\n\nKEYWORDS:\n" + "\n".join(keywords) + "\n"
