"""The simulator over real HTTP, driven by the real openai SDK (through OpenAIProvider)."""

from __future__ import annotations

import asyncio
import re
import struct
import time
import zlib
from decimal import Decimal

import httpx
import openai
import pytest

from domain.ai_schemas import CONTENT_STRUCTURES
from providers.base import ProviderError, TextResult
from providers.jsonschema_lite import validate
from providers.openai_provider import OpenAIProvider
from providers.runware import RunwareProvider
from simulator.__main__ import build_parser, config_from_args
from simulator.config import SimConfig
from simulator.png import PNG_SIGNATURE, draw_png
from simulator.schemas import SCHEMAS
from simulator.server import SimulatorThread
from tests.sim_fixture import KEYWORDS, cluster_prompt, running_simulator

SYSTEM = "You are igny8's SEO assistant. Answer with JSON only."


async def _call(provider: OpenAIProvider, name: str, prompt: str) -> TextResult:
    return await provider.complete_json(
        model="gpt-4o-mini", system=SYSTEM, prompt=prompt, schema_name=name, schema=SCHEMAS[name]
    )


def _words(markup: str) -> int:
    return len(re.sub(r"<[^>]+>", " ", markup).split())


# --------------------------------------------------------------------------- text functions


async def test_auto_cluster_puts_every_keyword_in_exactly_one_cluster(provider: OpenAIProvider):
    result = await _call(provider, "auto_cluster", cluster_prompt(KEYWORDS))
    assert validate(result.data, SCHEMAS["auto_cluster"]) == []
    clustered = [k for c in result.data["clusters"] for k in c["keywords"]]
    assert sorted(clustered) == sorted(KEYWORDS)
    by_name = {c["name"]: c["keywords"] for c in result.data["clusters"]}
    assert set(by_name["Coffee Grinder"]) == {k for k in KEYWORDS if "grinder" in k}
    assert set(by_name["Cold Brew"]) == {k for k in KEYWORDS if "cold brew" in k}
    assert all(c["description"] for c in result.data["clusters"])


async def test_outputs_are_deterministic(provider: OpenAIProvider):
    first = await _call(provider, "auto_cluster", cluster_prompt(KEYWORDS))
    second = await _call(provider, "auto_cluster", cluster_prompt(KEYWORDS))
    other = await _call(provider, "auto_cluster", cluster_prompt([*KEYWORDS, "green tea"]))
    assert first.raw == second.raw and first.data == second.data
    assert other.data != first.data


async def test_token_usage_is_realistic(provider: OpenAIProvider):
    prompt = cluster_prompt(KEYWORDS)
    result = await _call(provider, "auto_cluster", prompt)
    assert abs(result.input_tokens - (len(SYSTEM) + len(prompt)) / 4) <= 2
    assert result.output_tokens == max(1, len(result.raw) // 4)
    assert result.model == "gpt-4o-mini"


async def test_generate_ideas(provider: OpenAIProvider):
    keywords = ["cold brew ratio", "how to make cold brew", "cold brew concentrate"]
    prompt = "CLUSTER: Cold Brew\nKEYWORDS:\n" + "\n".join(keywords) + "\n\nWrite ideas."
    result = await _call(provider, "generate_ideas", prompt)
    assert validate(result.data, SCHEMAS["generate_ideas"]) == []
    ideas = result.data["ideas"]
    assert 2 <= len(ideas) <= 3
    assert len({i["title"] for i in ideas}) == len(ideas)
    for idea in ideas:
        assert "Cold Brew" in idea["title"]
        assert idea["content_type"] == "post" and idea["content_structure"] in CONTENT_STRUCTURES
        assert idea["target_keywords"] and set(idea["target_keywords"]) <= set(keywords)
        assert idea["description"].splitlines()[1] == "Sections:"  # then the H2 outline


async def test_generate_content_is_a_real_article(provider: OpenAIProvider):
    prompt = "TITLE: The Complete Guide to Cold Brew\nKEYWORDS:\ncold brew\ncold brew ratio\n"
    result = await _call(provider, "generate_content", prompt)
    data = result.data
    assert validate(data, SCHEMAS["generate_content"]) == []
    assert data["title"] == "The Complete Guide to Cold Brew"
    assert data["html"].count("<h2>") >= 3 and "<ul>" in data["html"] and "<p>" in data["html"]
    assert 900 <= _words(data["html"]) <= 1400
    assert data["word_count"] == _words(data["html"])
    assert 0 < len(data["meta_description"]) <= 160
    assert "cold brew" in data["html"]
    assert data["focus_keyword"] == "cold brew" and "cold brew" in data["html"].split("</p>")[0]
    assert 0 < len(data["meta_title"]) <= 60 and re.fullmatch(
        r"[a-z0-9]+(-[a-z0-9]+)*", data["slug"]
    )


@pytest.mark.parametrize("count", [0, 1, 4])
async def test_generate_image_prompts_returns_n_prompts(provider: OpenAIProvider, count: int):
    prompt = f"TITLE: Cold Brew at Home\nMAX_IN_ARTICLE: {count}\nKEYWORDS:\ncold brew\n"
    result = await _call(provider, "generate_image_prompts", prompt)
    assert validate(result.data, SCHEMAS["generate_image_prompts"]) == []
    prompts = [image["prompt"] for image in result.data["in_article"]]
    assert len(prompts) == count and len(set(prompts)) == count
    assert "Cold Brew at Home" in result.data["featured"]["prompt"]
    alts = [result.data["featured"]["alt_text"]] + [
        i["alt_text"] for i in result.data["in_article"]
    ]
    assert all(0 < len(alt) <= 125 for alt in alts)


async def test_unknown_function_satisfies_its_schema(provider: OpenAIProvider):
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
            "n": {"type": "integer"},
        },
        "required": ["tags", "n"],
        "additionalProperties": False,
    }
    result = await provider.complete_json(
        model="gpt-4o-mini", system=SYSTEM, prompt="tag this", schema_name="tagger", schema=schema
    )
    assert validate(result.data, schema) == []


async def test_latency_is_applied(sim: SimulatorThread, provider: OpenAIProvider):
    sim.configure(latency_s=0.3)
    started = time.perf_counter()
    await _call(provider, "auto_cluster", cluster_prompt(["a b", "a c"]))
    assert time.perf_counter() - started >= 0.3


async def test_chat_and_images_latency_can_differ(sim: SimulatorThread, provider: OpenAIProvider):
    # Unset, both follow latency_s (the behaviour before the per-endpoint knobs).
    assert sim.configure(latency_s=0.05)["chat_latency_s"] is None
    sim.configure(chat_latency_s=0.1, images_latency_s=0.6)
    started = time.perf_counter()
    await _call(provider, "auto_cluster", cluster_prompt(["a b", "a c"]))
    chat_s = time.perf_counter() - started
    started = time.perf_counter()
    await provider.generate_image(model="gpt-image-1", prompt="a slow kite")
    image_s = time.perf_counter() - started
    assert 0.1 <= chat_s < 0.5 and image_s >= 0.6
    rows = {r["endpoint"]: r for r in httpx.get(f"{sim.url}/_sim/timeline").json()["requests"]}
    assert rows["images.generations"]["left"] - rows["images.generations"]["arrived"] >= 0.595
    # null clears a knob: the call falls back to latency_s
    assert sim.configure(images_latency_s=None)["images_latency_s"] is None
    started = time.perf_counter()
    await provider.generate_image(model="gpt-image-1", prompt="a quick kite")
    assert time.perf_counter() - started < 0.5
    bad = httpx.post(f"{sim.url}/_sim/config", json={"chat_latency_s": -1})
    assert bad.status_code == 400 and "chat_latency_s" in bad.json()["error"]["message"]


async def test_runware_follows_the_images_latency(sim: SimulatorThread):
    sim.configure(chat_latency_s=0.0, images_latency_s=0.4)
    runware = RunwareProvider("rw-test", f"{sim.url}/runware/v1", timeout_s=10)
    started = time.perf_counter()
    try:
        await runware.generate_image(model="runware:100@1", prompt="a lighthouse", size="512x512")
    finally:
        await runware.aclose()
    assert time.perf_counter() - started >= 0.4


# --------------------------------------------------------------------------- images


async def test_images_b64_and_url(sim: SimulatorThread, provider: OpenAIProvider):
    b64 = await provider.generate_image(model="gpt-image-1", prompt="a cup of coffee")
    url_provider = OpenAIProvider("sk-test", f"{sim.url}/v1", 10, image_response_format="url")
    try:
        via_url = await url_provider.generate_image(model="dall-e-3", prompt="a cup of coffee")
    finally:
        await url_provider.aclose()
    for image in (b64, via_url):
        assert image.data.startswith(PNG_SIGNATURE)
        assert image.mime_type == "image/png"
        assert image.provider_cost_usd is None
    assert b64.revised_prompt == "a cup of coffee"
    assert sim.stats()["requests"]["files"] == 1  # the URL was downloaded at once


async def test_images_are_deterministic_per_prompt(provider: OpenAIProvider):
    one = await provider.generate_image(model="gpt-image-1", prompt="a red bicycle")
    again = await provider.generate_image(model="gpt-image-1", prompt="a red bicycle")
    other = await provider.generate_image(model="gpt-image-1", prompt="a blue boat")
    assert one.data == again.data != other.data


async def test_runware_image_with_cost(sim: SimulatorThread):
    runware = RunwareProvider("rw-test", f"{sim.url}/runware/v1", timeout_s=10)
    try:
        image = await runware.generate_image(
            model="runware:100@1", prompt="a lighthouse", size="1280x720"
        )
    finally:
        await runware.aclose()
    assert image.data.startswith(PNG_SIGNATURE)
    assert image.provider_cost_usd == Decimal("0.0013")
    width, height = struct.unpack(">II", image.data[16:24])
    # 1280x720 is sent as 1280x704 (Runware wants multiples of 64); drawn small, same aspect.
    assert (width, height) == (64, 35)
    assert sim.stats()["images_generated"] == 1


def test_png_encoder_writes_valid_chunks():
    data = draw_png("seed", 5, 3)
    assert data.startswith(PNG_SIGNATURE)
    length, tag = struct.unpack(">I4s", data[8:16])
    assert (tag, length) == (b"IHDR", 13)
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29]) & 0xFFFFFFFF
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_len])
    assert len(raw) == 3 * (1 + 5 * 3)


async def test_images_are_served_concurrently(sim: SimulatorThread):
    """The simulator must not be a benchmark's bottleneck: requests overlap instead of
    queueing behind each other. Checked against the configured latency, not an absolute
    rate, so a busy machine cannot fail it (absolute throughput is the benchmarks' job)."""
    n, latency = 100, 2.0
    sim.configure(latency_s=latency)
    headers = {"Authorization": "Bearer sk-test"}
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(
        base_url=sim.url, headers=headers, limits=limits, timeout=60
    ) as client:

        async def one(i: int) -> int:
            body = {"model": "gpt-image-1", "prompt": f"bench {i % 50}", "size": "1024x1024"}
            return (await client.post("/v1/images/generations", json=body)).status_code

        started = time.perf_counter()
        codes = await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
    assert codes == [200] * n
    stats = sim.stats()
    assert stats["images_generated"] == n
    # Each request is held `latency` seconds from its arrival, so all of them overlap unless
    # the sends straggle over more than that; at least half at once is a wide margin.
    assert stats["max_in_flight"] >= n // 2, stats
    # One at a time would take n × latency = 200 s; concurrently it is about one latency.
    assert elapsed < n * latency / 10, f"{n} images took {elapsed:.1f} s"


# --------------------------------------------------------------------------- limits & faults


async def test_concurrency_limit_answers_429_with_retry_after(
    sim: SimulatorThread, provider: OpenAIProvider
):
    # A 2 s answer: the six requests all reach the gate while the first two are still in
    # flight, however the machine schedules them.
    sim.configure(max_concurrency=2, latency_s=2.0, retry_after_s=0.25)
    results = await asyncio.gather(
        *(_call(provider, "auto_cluster", cluster_prompt([f"k{i} x", "x y"])) for i in range(6)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, TextResult)]
    limited = [r for r in results if isinstance(r, ProviderError)]
    assert len(ok) == 2 and len(limited) == 4
    assert all(e.code == "rate_limited" and e.retryable and e.retry_after == 0.25 for e in limited)
    stats = sim.stats()
    assert stats["max_in_flight"] == 2 and stats["concurrency_429"] == 4


async def test_concurrency_429_headers(sim: SimulatorThread):
    sim.configure(max_concurrency=1, latency_s=2.0, retry_after_s=1.5)
    body = {"model": "gpt-image-1", "prompt": "x"}
    async with httpx.AsyncClient(base_url=sim.url, headers={"Authorization": "Bearer k"}) as c:
        first, second = await asyncio.gather(
            c.post("/v1/images/generations", json=body),
            c.post("/v1/images/generations", json=body),
        )
    limited = first if first.status_code == 429 else second
    assert {first.status_code, second.status_code} == {200, 429}
    assert limited.headers["retry-after"] == "2" and limited.headers["retry-after-ms"] == "1500"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"


async def test_seeded_faults_repeat_after_reset(sim: SimulatorThread):
    sim.configure(rate_500=0.5)
    headers = {"Authorization": "Bearer k"}

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=sim.url, headers=headers) as client:
            body = {"model": "gpt-image-1", "prompt": "x"}
            return [
                (await client.post("/v1/images/generations", json=body)).status_code
                for _ in range(12)
            ]

    first = await run()
    sim.reset(restore_config=False)
    assert await run() == first and {200, 500} == set(first)


async def test_auth_is_checked_first(sim: SimulatorThread):
    sim.configure(insufficient_quota=True)
    async with httpx.AsyncClient(base_url=sim.url) as client:
        missing = await client.post("/v1/chat/completions", json={})
        invalid = await client.post(
            "/v1/images/generations", json={}, headers={"Authorization": "Bearer sk-invalid-1"}
        )
        quota = await client.post(
            "/v1/images/generations", json={}, headers={"Authorization": "Bearer sk-ok"}
        )
    for response in (missing, invalid):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert quota.status_code == 429 and quota.json()["error"]["type"] == "insufficient_quota"


async def test_runware_errors_use_runware_shape(sim: SimulatorThread):
    task = {
        "taskType": "imageInference",
        "taskUUID": "t-1",
        "positivePrompt": "[UNSAFE] thing",
        "model": "runware:100@1",
        "width": 512,
        "height": 512,
    }
    async with httpx.AsyncClient(base_url=sim.url, headers={"Authorization": "Bearer k"}) as c:
        policy = await c.post("/runware/v1", json=[task])
        bad_size = await c.post(
            "/runware/v1", json=[{**task, "positivePrompt": "ok", "width": 500}]
        )
    assert policy.status_code == 400
    assert policy.json()["errors"][0]["code"] == "contentPolicyViolation"
    assert bad_size.status_code == 400 and bad_size.json()["errors"][0]["parameter"] == "width"


async def test_unknown_url_is_openai_404(sim: SimulatorThread):
    async with httpx.AsyncClient(base_url=sim.url) as client:
        response = await client.post("/v1/nope", json={})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/nope)"


# --------------------------------------------------------------------------- control plane


async def test_models_list_through_sdk(sim: SimulatorThread):
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=f"{sim.url}/v1", max_retries=0)
    try:
        models = [m.id async for m in client.models.list()]
    finally:
        await client.close()
    assert "gpt-4o-mini" in models and "gpt-image-1" in models


def test_config_endpoint_validates_and_updates(sim: SimulatorThread):
    assert sim.configure(latency_s=0.1, max_concurrency=3)["max_concurrency"] == 3
    assert httpx.get(f"{sim.url}/_sim/config").json()["latency_s"] == 0.1
    bad = httpx.post(f"{sim.url}/_sim/config", json={"nope": 1})
    assert bad.status_code == 400 and "unknown config field" in bad.json()["error"]["message"]
    too_high = httpx.post(f"{sim.url}/_sim/config", json={"rate_429": 2})
    assert too_high.status_code == 400
    sim.reset()
    assert httpx.get(f"{sim.url}/_sim/config").json()["latency_s"] == 0.0


def test_health_and_stats_reset(sim: SimulatorThread):
    assert httpx.get(f"{sim.url}/health").json() == {"status": "ok"}
    httpx.post(f"{sim.url}/v1/chat/completions", json={})
    assert sim.stats()["requests"]["chat.completions"] == 1
    sim.reset()
    assert sim.stats()["requests_total"] == 0


async def test_timeline_records_each_answered_request(sim: SimulatorThread):
    sim.configure(latency_s=0.2)
    before = time.time()
    provider = OpenAIProvider("sk-test", f"{sim.url}/v1", 10)
    try:
        await provider.generate_image(model="gpt-image-1", prompt="a red kite")
    finally:
        await provider.aclose()
    httpx.post(f"{sim.url}/v1/chat/completions", json={})  # a 400: not answered, not kept
    rows = httpx.get(f"{sim.url}/_sim/timeline").json()["requests"]
    assert [r["endpoint"] for r in rows] == ["images.generations"]
    # The latency is waited on the monotonic clock, the timeline is wall-clock: 5 ms slack.
    assert before <= rows[0]["arrived"] and rows[0]["left"] - rows[0]["arrived"] >= 0.2 - 0.005
    sim.reset()
    assert httpx.get(f"{sim.url}/_sim/timeline").json()["requests"] == []


def test_separate_instances_have_separate_state():
    with running_simulator(SimConfig(insufficient_quota=True)) as broke:
        response = httpx.post(
            f"{broke.url}/v1/chat/completions", json={}, headers={"Authorization": "Bearer k"}
        )
        assert response.status_code == 429


def test_cli_sets_per_endpoint_latency():
    config = config_from_args(
        build_parser().parse_args(["--latency", "0.2", "--images-latency", "2"])
    )
    assert (config.latency_s, config.chat_latency_s, config.images_latency_s) == (0.2, None, 2.0)
    assert config_from_args(build_parser().parse_args([])).images_latency_s is None


def test_cli_parses_options():
    args = build_parser().parse_args(
        ["--port", "9000", "--latency", "0.5", "--max-concurrency", "20", "--rate-429", "0.1"]
    )
    config = config_from_args(args)
    assert (args.port, config.latency_s, config.max_concurrency, config.rate_429) == (
        9000,
        0.5,
        20,
        0.1,
    )
