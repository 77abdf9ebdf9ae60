"""Provider clients against the simulator over real HTTP: results, error classes, retries.

The retry decision is the contract with Temporal: 429/5xx/timeouts/connection failures
retry, quota/auth/content-policy/invalid requests do not, and the SDK never retries itself.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from core.settings import Settings
from providers.base import ImageProvider, ProviderError, TextProvider
from providers.errors import classify_http_status, classify_openai_error, parse_retry_after
from providers.openai_provider import OpenAIProvider
from providers.registry import ProviderRegistry
from providers.runware import RunwareProvider, parse_size
from simulator.schemas import AUTO_CLUSTER_SCHEMA, SCHEMAS
from simulator.server import SimulatorThread
from tests.sim_fixture import KEYWORDS, closed_port, cluster_prompt


async def _cluster(provider: OpenAIProvider, prompt: str | None = None) -> object:
    return await provider.complete_json(
        model="gpt-4o-mini",
        system="Cluster keywords.",
        prompt=prompt or cluster_prompt(KEYWORDS),
        schema_name="auto_cluster",
        schema=AUTO_CLUSTER_SCHEMA,
    )


async def _expect_error(awaitable: object) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await awaitable  # type: ignore[misc]
    return caught.value


def _requests(sim: SimulatorThread, endpoint: str = "chat.completions") -> int:
    return int(sim.stats()["requests"].get(endpoint, 0))


# --------------------------------------------------------------------------- retryable


async def test_rate_limit_is_retryable_with_retry_after(
    sim: SimulatorThread, provider: OpenAIProvider
):
    sim.configure(rate_429=1.0, retry_after_s=2.0)
    error = await _expect_error(_cluster(provider))
    assert (error.code, error.retryable, error.status, error.retry_after) == (
        "rate_limited",
        True,
        429,
        2.0,
    )
    assert error.message == "Rate limited by OpenAI; retry after 2.0 s"
    assert _requests(sim) == 1  # the SDK did not retry on its own


async def test_server_error_is_retryable(sim: SimulatorThread, provider: OpenAIProvider):
    sim.configure(rate_500=1.0)
    error = await _expect_error(_cluster(provider))
    assert (error.code, error.retryable, error.status) == ("server_error", True, 500)
    assert error.message == "OpenAI had a temporary server error (500)"
    assert _requests(sim) == 1


async def test_timeout_is_retryable(sim: SimulatorThread):
    sim.configure(rate_timeout=1.0, timeout_hang_s=1.0)
    impatient = OpenAIProvider("sk-test", f"{sim.url}/v1", timeout_s=0.3)
    try:
        error = await _expect_error(_cluster(impatient))
    finally:
        await impatient.aclose()
    assert (error.code, error.retryable) == ("timeout", True)
    assert error.message == "OpenAI did not answer within the time limit"
    assert _requests(sim) == 1


async def test_connection_refused_is_retryable():
    with closed_port() as port:
        nowhere = OpenAIProvider("sk-test", f"http://127.0.0.1:{port}/v1", timeout_s=5)
        try:
            error = await _expect_error(_cluster(nowhere))
        finally:
            await nowhere.aclose()
    assert (error.code, error.retryable) == ("connection_error", True)
    assert error.message.startswith("Could not reach OpenAI")


async def test_truncated_output_is_a_retryable_bad_response(provider: OpenAIProvider):
    error = await _expect_error(
        provider.complete_json(
            model="gpt-4o-mini",
            system="s",
            prompt="TITLE: Long\nKEYWORDS:\nlong read\n",
            schema_name="generate_content",
            schema=SCHEMAS["generate_content"],
            max_output_tokens=50,
        )
    )
    assert (error.code, error.retryable) == ("bad_response", True)


# --------------------------------------------------------------------------- not retryable


async def test_insufficient_quota_is_not_retryable(sim: SimulatorThread, provider: OpenAIProvider):
    sim.configure(insufficient_quota=True)
    error = await _expect_error(_cluster(provider))
    assert (error.code, error.retryable, error.status) == ("insufficient_quota", False, 429)
    assert "run out of quota" in error.message
    assert _requests(sim) == 1


async def test_invalid_key_is_not_retryable(sim: SimulatorThread):
    bad = OpenAIProvider("sk-invalid-123", f"{sim.url}/v1", timeout_s=5)
    try:
        error = await _expect_error(_cluster(bad))
    finally:
        await bad.aclose()
    assert (error.code, error.retryable, error.status) == ("auth_error", False, 401)
    assert error.message == "The OpenAI API key was rejected (401)"
    assert _requests(sim) == 1


async def test_content_policy_is_not_retryable(sim: SimulatorThread, provider: OpenAIProvider):
    error = await _expect_error(_cluster(provider, "KEYWORDS:\n[Unsafe] something\n"))
    assert (error.code, error.retryable, error.status) == ("content_policy", False, 400)
    assert error.message == "OpenAI rejected the prompt under its content policy"
    image_error = await _expect_error(
        provider.generate_image(model="gpt-image-1", prompt="[unsafe] picture")
    )
    assert image_error.code == "content_policy"
    assert sim.stats()["policy_refusals"] == 2


async def test_unknown_endpoint_is_an_invalid_request(sim: SimulatorThread):
    wrong = OpenAIProvider("sk-test", f"{sim.url}/not-v1", timeout_s=5)
    try:
        error = await _expect_error(_cluster(wrong))
    finally:
        await wrong.aclose()
    assert (error.code, error.retryable, error.status) == ("invalid_request", False, 404)
    assert "rejected the request (404)" in error.message


async def test_bad_parameter_is_an_invalid_request(provider: OpenAIProvider):
    error = await _expect_error(
        provider.generate_image(model="gpt-image-1", prompt="x", size="huge")
    )
    assert (error.code, error.retryable, error.status) == ("invalid_request", False, 400)
    assert "Invalid size" in error.message


async def test_image_errors_are_classified_too(sim: SimulatorThread, provider: OpenAIProvider):
    sim.configure(rate_429=1.0, retry_after_s=0.5)
    error = await _expect_error(provider.generate_image(model="gpt-image-1", prompt="x"))
    assert (error.code, error.retry_after) == ("rate_limited", 0.5)
    assert _requests(sim, "images.generations") == 1


# --------------------------------------------------------------------------- Runware


async def test_runware_errors(sim: SimulatorThread):
    good = RunwareProvider("rw-key", f"{sim.url}/runware/v1", timeout_s=5)
    bad = RunwareProvider("sk-invalid", f"{sim.url}/runware/v1", timeout_s=5)
    try:
        policy = await _expect_error(good.generate_image(model="m", prompt="[unsafe] x"))
        auth = await _expect_error(bad.generate_image(model="m", prompt="a tree"))
        sim.configure(rate_429=1.0, retry_after_s=0.2)
        limited = await _expect_error(good.generate_image(model="m", prompt="a tree"))
        sim.configure(rate_429=0.0, insufficient_quota=True)
        quota = await _expect_error(good.generate_image(model="m", prompt="a tree"))
    finally:
        await good.aclose()
        await bad.aclose()
    assert (policy.code, policy.retryable) == ("content_policy", False)
    assert policy.message == "Runware rejected the prompt under its content policy"
    assert (auth.code, auth.retryable, auth.message) == (
        "auth_error",
        False,
        "The Runware API key was rejected (401)",
    )
    assert (limited.code, limited.retryable, limited.retry_after) == ("rate_limited", True, 0.2)
    assert (quota.code, quota.retryable) == ("insufficient_quota", False)
    assert _requests(sim, "runware") == 4


async def test_runware_connection_refused():
    with closed_port() as port:
        runware = RunwareProvider("k", f"http://127.0.0.1:{port}/runware/v1", timeout_s=5)
        try:
            error = await _expect_error(runware.generate_image(model="m", prompt="a tree"))
        finally:
            await runware.aclose()
    assert (error.code, error.retryable) == ("connection_error", True)


def test_runware_size_snaps_to_multiples_of_64():
    assert parse_size("1024x1024") == (1024, 1024)
    assert parse_size("1280x720") == (1280, 704)
    assert parse_size("4000x50") == (2048, 128)
    with pytest.raises(ProviderError) as caught:
        parse_size("big")
    assert caught.value.code == "invalid_request" and not caught.value.retryable


# --------------------------------------------------------------------------- classification units


def test_retry_after_forms():
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    in_ten = format_datetime(now + timedelta(seconds=10), usegmt=True)
    assert parse_retry_after({"Retry-After": in_ten}, now=now) == 10.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (429, {"error": {"code": "rate_limit_exceeded"}}, "rate_limited", True),
        (429, {"error": {"code": "insufficient_quota"}}, "insufficient_quota", False),
        (402, {"errors": [{"code": "insufficientCredits"}]}, "insufficient_quota", False),
        (500, "oops", "server_error", True),
        (503, None, "server_error", True),
        (408, None, "timeout", True),
        (401, {"error": {"code": "invalid_api_key"}}, "auth_error", False),
        (403, {}, "auth_error", False),
        (400, {"error": {"code": "content_policy_violation"}}, "content_policy", False),
        (400, {"error": {"code": "moderation_blocked"}}, "content_policy", False),
        (400, {"error": {"message": "bad"}}, "invalid_request", False),
        (
            422,
            b'{"errors": [{"code": "invalidParameter", "message": "w"}]}',
            "invalid_request",
            False,
        ),
    ],
)
def test_classify_http_status(status: int, body: object, code: str, retryable: bool):
    error = classify_http_status(status, body, {"Retry-After": "1"})
    assert (error.code, error.retryable, error.status) == (code, retryable, status)


def test_classify_httpx_exceptions():
    request = httpx.Request("GET", "http://example.invalid/")
    assert classify_openai_error(httpx.ReadTimeout("slow", request=request)).code == "timeout"
    refused = classify_openai_error(httpx.ConnectError("refused", request=request))
    assert (refused.code, refused.retryable) == ("connection_error", True)
    response = httpx.Response(429, headers={"retry-after": "4"}, request=request)
    status_error = httpx.HTTPStatusError("429", request=request, response=response)
    assert classify_openai_error(status_error).retry_after == 4.0
    assert classify_openai_error(ValueError("not json")).code == "bad_response"


def test_provider_error_survives_pickling():
    error = ProviderError("m", code="rate_limited", retryable=True, status=429, retry_after=1.5)
    clone = pickle.loads(pickle.dumps(error))
    assert clone.to_details() == error.to_details() and str(clone) == "m"


# --------------------------------------------------------------------------- registry


async def test_registry_routes_to_the_simulator(sim: SimulatorThread):
    registry = ProviderRegistry(simulator_url=sim.url, timeout_s=10)
    try:
        text = registry.text("openai")
        assert isinstance(text, TextProvider) and registry.uses_simulator
        result = await text.complete_json(
            model="gpt-4o-mini",
            system="s",
            prompt=cluster_prompt(KEYWORDS),
            schema_name="auto_cluster",
            schema=AUTO_CLUSTER_SCHEMA,
        )
        assert result.data["clusters"]
        image = await registry.image("runware").generate_image(model="runware:100@1", prompt="sky")
        assert image.provider_cost_usd is not None
        assert isinstance(registry.image("openai"), ImageProvider)
        assert registry.image("openai") is registry.text("openai")
    finally:
        await registry.aclose()


def test_registry_from_settings(sim: SimulatorThread):
    port = int(sim.url.rsplit(":", 1)[1])
    settings = Settings(openai_api_key=None, openai_base_url=None, simulator_port=port)
    registry = ProviderRegistry.from_settings(settings)
    openai_provider = registry.text("openai")
    assert isinstance(openai_provider, OpenAIProvider)
    assert openai_provider.base_url == f"{sim.url}/v1"
    runware = registry.image("runware")
    assert isinstance(runware, RunwareProvider)
    assert runware.base_url == f"{sim.url}/runware/v1"


def test_registry_with_real_keys_skips_the_simulator():
    registry = ProviderRegistry(
        openai_api_key="sk-real", runware_api_key="rw-real", simulator_url="http://127.0.0.1:1"
    )
    openai_provider = registry.text("openai")
    assert isinstance(openai_provider, OpenAIProvider) and openai_provider.base_url is None
    runware = registry.image("runware")
    assert isinstance(runware, RunwareProvider)
    assert runware.base_url == "https://api.runware.ai/v1"
    assert not registry.uses_simulator


def test_registry_errors():
    registry = ProviderRegistry()
    for call in (lambda: registry.text("anthropic"), lambda: registry.image("midjourney")):
        with pytest.raises(ProviderError) as caught:
            call()
        assert (caught.value.code, caught.value.retryable) == ("invalid_request", False)
    with pytest.raises(ProviderError) as caught:
        registry.text("runware")
    assert caught.value.code == "invalid_request"
    with pytest.raises(ProviderError) as caught:
        registry.text("openai")
    assert caught.value.code == "auth_error" and "OPENAI_API_KEY" in caught.value.message
