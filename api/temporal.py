"""The API's Temporal client: optional, connected lazily, never fatal.

Why: the API must start and serve reads (balances, content, logs) while Temporal is down,
and must pick Temporal up once it is back without a restart. So a failed connection is a
logged warning and `None`, and later requests retry at most every `retry_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from temporalio.client import Client

from core.settings import Settings
from core.temporal import DATA_CONVERTER

logger = logging.getLogger("igny8.api")


def temporal_target(settings: Settings) -> str:
    """The configured frontend, else the embedded dev server on the local port."""
    return settings.temporal_address or f"127.0.0.1:{settings.temporal_port}"


class TemporalConnector:
    """Holds the client; reconnects on demand, throttled, with one attempt at a time."""

    def __init__(
        self,
        settings: Settings,
        *,
        enabled: bool = True,
        timeout_seconds: float = 3.0,
        retry_seconds: float = 15.0,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        """`client_options`: more `Client.connect` arguments (tracing interceptors, the
        runtime exporting the SDK's metrics: core.observability)."""
        self.settings = settings
        self.client_options = client_options or {}
        self.enabled = enabled
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        self.client: Client | None = None
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()

    async def connect(self) -> Client | None:
        """One attempt now; on failure a warning and None, never an exception."""
        if not self.enabled:
            return None
        self._last_attempt = time.monotonic()
        target = temporal_target(self.settings)
        try:
            self.client = await asyncio.wait_for(
                Client.connect(
                    target,
                    namespace=self.settings.temporal_namespace,
                    data_converter=DATA_CONVERTER,
                    connect_timeout=timedelta(seconds=self.timeout_seconds),
                    **self.client_options,
                ),
                timeout=self.timeout_seconds + 1,
            )
        except Exception as exc:
            logger.warning("Temporal at %s is unavailable: %s", target, exc)
            self.client = None
        return self.client

    async def get(self) -> Client | None:
        """The client, retrying the connection if the last attempt is old enough."""
        if self.client is not None or not self.enabled:
            return self.client
        if time.monotonic() - self._last_attempt < self.retry_seconds:
            return None
        async with self._lock:
            if self.client is None and time.monotonic() - self._last_attempt >= self.retry_seconds:
                await self.connect()
        return self.client
