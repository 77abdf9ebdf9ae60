"""Pick the provider client for an AIModelConfig.provider value ("openai" / "runware").

Built from explicit arguments so tests and benchmarks never need the environment; the
`from_settings` constructor is the production path. With no real key, every call goes to
the local simulator, so the default install needs no network and no API key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from providers.base import ImageProvider, ProviderError, TextProvider
from providers.errors import make_error
from providers.http import new_http_client
from providers.openai_provider import OpenAIProvider
from providers.runware import RunwareProvider

if TYPE_CHECKING:
    from core.settings import Settings

SIMULATOR_API_KEY = "sk-simulator"
# An OpenAI-compatible server at OPENAI_BASE_URL may need no key, but the SDK wants one.
NO_KEY_PLACEHOLDER = "sk-no-key"
DEFAULT_RUNWARE_URL = "https://api.runware.ai/v1"


class ProviderRegistry:
    """Lazily builds one client per provider and shares one download pool between them."""

    def __init__(
        self,
        openai_api_key: str | None = None,
        openai_base_url: str | None = None,
        runware_api_key: str | None = None,
        runware_base_url: str = DEFAULT_RUNWARE_URL,
        simulator_url: str | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.timeout_s = timeout_s
        self._openai_target = _openai_target(openai_api_key, openai_base_url, simulator_url)
        self._runware_target = _runware_target(runware_api_key, runware_base_url, simulator_url)
        self._openai: OpenAIProvider | None = None
        self._runware: RunwareProvider | None = None
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderRegistry:
        """Production wiring: real keys when set, else the simulator at settings.simulator_url."""
        openai_key = settings.openai_api_key
        runware_key = settings.runware_api_key
        return cls(
            openai_api_key=openai_key.get_secret_value() if openai_key else None,
            openai_base_url=settings.openai_base_url,
            runware_api_key=runware_key.get_secret_value() if runware_key else None,
            runware_base_url=settings.runware_base_url,
            simulator_url=settings.simulator_url if settings.uses_simulator else None,
            timeout_s=settings.provider_timeout_s,
        )

    @property
    def uses_simulator(self) -> bool:
        """True when OpenAI calls go to the simulator (useful for logs and the UI)."""
        return self._openai_target is not None and self._openai_target[0] == SIMULATOR_API_KEY

    def text(self, provider: str) -> TextProvider:
        """The text provider for an AIModelConfig.provider value."""
        name = provider.strip().lower()
        if name == "openai":
            return self._openai_provider()
        if name == "runware":
            raise make_error("invalid_request", "Runware does not offer text generation")
        raise _unknown(provider)

    def image(self, provider: str) -> ImageProvider:
        """The image provider for an AIModelConfig.provider value."""
        name = provider.strip().lower()
        if name == "openai":
            return self._openai_provider()
        if name == "runware":
            return self._runware_provider()
        raise _unknown(provider)

    def _openai_provider(self) -> OpenAIProvider:
        if self._openai is None:
            if self._openai_target is None:
                raise _not_configured("OpenAI", "OPENAI_API_KEY")
            key, base_url = self._openai_target
            self._openai = OpenAIProvider(
                key, base_url, self.timeout_s, http_client=self._shared_http()
            )
        return self._openai

    def _runware_provider(self) -> RunwareProvider:
        if self._runware is None:
            if self._runware_target is None:
                raise _not_configured("Runware", "RUNWARE_API_KEY")
            key, base_url = self._runware_target
            self._runware = RunwareProvider(
                key, base_url, self.timeout_s, http_client=self._shared_http()
            )
        return self._runware

    def _shared_http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = new_http_client(self.timeout_s)
        return self._http

    async def aclose(self) -> None:
        """Close every client this registry created; safe to call twice."""
        if self._openai is not None:
            await self._openai.aclose()
            self._openai = None
        self._runware = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _openai_target(
    api_key: str | None, base_url: str | None, simulator_url: str | None
) -> tuple[str, str | None] | None:
    """(api key, base url) for OpenAI: real key, keyless compatible server, simulator, or none."""
    if api_key:
        return api_key, base_url or None
    if base_url:
        return NO_KEY_PLACEHOLDER, base_url
    if simulator_url:
        return SIMULATOR_API_KEY, f"{simulator_url.rstrip('/')}/v1"
    return None


def _runware_target(
    api_key: str | None, base_url: str, simulator_url: str | None
) -> tuple[str, str] | None:
    if api_key:
        return api_key, base_url
    if simulator_url:
        return SIMULATOR_API_KEY, f"{simulator_url.rstrip('/')}/runware/v1"
    return None


def _unknown(provider: str) -> ProviderError:
    return make_error(
        "invalid_request", f"Unknown AI provider {provider!r}; expected 'openai' or 'runware'"
    )


def _not_configured(name: str, env: str) -> ProviderError:
    return make_error("auth_error", f"No {name} API key is configured; set {env}")
