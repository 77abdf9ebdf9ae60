"""The WordPress client against a real WordPress (what it speaks) and a fake (how it fails).

Real: check(), the 401 / not-WordPress / unreachable messages, a PNG upload served back
byte-identical with its alt text, a post with featured image, slug and excerpt found by
slug across statuses exactly once. Fake: which failures Temporal should retry, and that
the lookups after an unknown outcome prevent duplicates.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cli.wordpress import (
    DatabaseConfig,
    WordPressInstance,
    WordPressStartError,
    drop_wordpress_database,
    start_wordpress,
)
from providers.wordpress import Media, Post, WordPressClient, WordPressError, safe_filename
from simulator.png import draw_png
from tests.fake_wordpress import DEFAULT_APP_PASSWORD, FakeWordPress, self_signed_certificate
from tests.procs import free_ports
from tests.sim_fixture import closed_port, running_simulator

WRONG_PASSWORD = "wXyZ 9876 wXyZ 9876 wXyZ 9876"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _error_of(awaitable: object) -> WordPressError:
    with pytest.raises(WordPressError) as caught:
        await awaitable  # type: ignore[misc]
    return caught.value


def _assert_secret_free(error: WordPressError, *secrets: str) -> None:
    for secret in secrets:
        for text in (str(error), repr(error), repr(error.to_details())):
            assert secret not in text
            assert secret.replace(" ", "") not in text


# --------------------------------------------------------------------------- real WordPress


@pytest.fixture
async def wp_client(wordpress: WordPressInstance) -> AsyncIterator[WordPressClient]:
    async with WordPressClient(
        wordpress.base_url, wordpress.username, wordpress.app_password, timeout_s=20
    ) as client:
        yield client


async def test_check_accepts_the_application_password(
    wp_client: WordPressClient, wordpress: WordPressInstance
) -> None:
    site = await wp_client.check()
    assert site.user_name == wordpress.username
    assert site.user_id > 0
    assert site.home == wordpress.base_url
    assert wordpress.app_password not in repr(wp_client)


async def test_wrong_application_password_is_a_clear_401(wordpress: WordPressInstance) -> None:
    async with WordPressClient(wordpress.base_url, wordpress.username, WRONG_PASSWORD) as client:
        error = await _error_of(client.check())
    assert (error.code, error.status, error.retryable) == ("auth_error", 401, False)
    assert "application password" in error.message
    _assert_secret_free(error, WRONG_PASSWORD, wordpress.app_password)


async def test_a_site_that_is_not_wordpress_says_so() -> None:
    with running_simulator() as sim:
        async with WordPressClient(sim.url, "igny8", WRONG_PASSWORD) as client:
            error = await _error_of(client.check())
    assert (error.code, error.retryable) == ("not_wordpress", False)
    assert "is not WordPress" in error.message


async def test_an_unreachable_site_is_retryable() -> None:
    with closed_port() as port:
        async with WordPressClient(f"http://127.0.0.1:{port}", "igny8", WRONG_PASSWORD) as client:
            error = await _error_of(client.check())
    assert (error.code, error.retryable) == ("unreachable", True)
    assert "unreachable" in error.message and "refused" in error.message


async def test_a_host_name_that_does_not_resolve_is_unreachable() -> None:
    async with WordPressClient("http://no-such-host.invalid", "igny8", WRONG_PASSWORD) as client:
        error = await _error_of(client.check())
    assert (error.code, error.retryable) == ("unreachable", True)
    assert "does not resolve" in error.message


async def test_png_upload_is_served_byte_identical_with_its_alt_text(
    wp_client: WordPressClient,
) -> None:
    png = draw_png("igny8 wordpress test", 96, 64)
    title = _unique("igny8-image")
    media = await wp_client.upload_media(png, f"{title}.png", "image/png", "A test chart", title)
    assert media.alt_text == "A test chart"
    served = httpx.get(media.source_url, timeout=10)
    assert served.status_code == 200 and served.content == png
    assert await wp_client.find_media(title) == media
    assert await wp_client.find_media(title[:-1]) is None  # a prefix is not a match


async def test_post_with_featured_image_is_found_by_slug_exactly_once(
    wp_client: WordPressClient, wordpress: WordPressInstance
) -> None:
    title = _unique("igny8-image")
    media = await wp_client.upload_media(draw_png(title, 32, 32), f"{title}.png", "image/png")
    slug = _unique("best-coffee-grinder")
    post = await wp_client.create_post(
        "Best coffee grinder", "<p>Burrs matter.</p>", slug, "Why burrs matter.", media.id
    )
    assert (post.slug, post.status) == (slug, "publish")
    assert post.link.startswith(wordpress.base_url) and slug in post.link
    assert await wp_client.find_post_by_slug(slug) == post
    assert await wp_client.find_post_by_slug(_unique("no-such-post")) is None
    stored = httpx.get(
        f"{wordpress.base_url}/wp-json/wp/v2/posts",
        params={"slug": slug, "status": "any", "context": "edit"},
        auth=(wordpress.username, wordpress.app_password),
        timeout=10,
    ).json()
    assert len(stored) == 1
    assert stored[0]["featured_media"] == media.id
    assert stored[0]["excerpt"]["raw"] == "Why burrs matter."


async def test_a_restart_keeps_posts_and_the_application_password(
    wordpress: WordPressInstance, tmp_path: Path
) -> None:
    """A second instance beside the session's; stopped and started again on its data."""
    port = free_ports(("restart",))["restart"]
    database = DatabaseConfig(f"igny8_test_wp_{uuid.uuid4().hex[:10]}")
    started: list[WordPressInstance] = []
    try:
        started.append(first := start_wordpress(tmp_path, port, database.name))
        async with WordPressClient(first.base_url, first.username, first.app_password) as client:
            post = await client.create_post("Kept", "<p>kept</p>", "kept-across-restarts")
        first.stop()
        started.append(again := start_wordpress(tmp_path, port, database.name))
        async with WordPressClient(again.base_url, again.username, again.app_password) as client:
            assert await client.find_post_by_slug("kept-across-restarts") == post
        assert again.app_password == first.app_password
        assert not first.running()
    finally:
        for instance in started:
            instance.stop()
        drop_wordpress_database(database)


def test_start_refuses_a_taken_port_and_a_bad_database_name(
    wordpress: WordPressInstance, tmp_path: Path
) -> None:
    with pytest.raises(WordPressStartError, match="taken"):
        start_wordpress(tmp_path, wordpress.port, "igny8_unused")
    with pytest.raises(WordPressStartError, match="database name"):
        start_wordpress(tmp_path, 1, "bad-name; DROP")


# --------------------------------------------------------------------------- fake WordPress


def _client(fake: FakeWordPress, timeout_s: float = 5.0) -> WordPressClient:
    return WordPressClient(fake.url, "igny8", DEFAULT_APP_PASSWORD, timeout_s=timeout_s)


async def test_a_500_on_the_first_create_is_retryable_and_the_retry_makes_one_post(
    fake_wordpress: FakeWordPress,
) -> None:
    fake_wordpress.fail("create_post", 500)
    async with _client(fake_wordpress) as client:
        error = await _error_of(client.create_post("T", "<p>x</p>", "first-try"))
        assert (error.code, error.status, error.retryable) == ("server_error", 500, True)
        assert await client.find_post_by_slug("first-try") is None
        post = await client.create_post("T", "<p>x</p>", "first-try")
    assert post.slug == "first-try"
    assert len(fake_wordpress.posts) == 1


async def test_a_timeout_after_the_create_is_retryable_and_the_lookup_finds_the_post(
    fake_wordpress: FakeWordPress,
) -> None:
    fake_wordpress.slow("create_post", delay_s=1.5)
    async with _client(fake_wordpress, timeout_s=0.3) as client:
        error = await _error_of(client.create_post("T", "<p>x</p>", "late-answer"))
        assert (error.code, error.retryable) == ("timeout", True)
        found = await client.find_post_by_slug("late-answer")  # what a retry does first
    assert found is not None and found.slug == "late-answer"
    assert len(fake_wordpress.posts) == 1


async def test_a_media_upload_timeout_is_resolved_by_its_title(
    fake_wordpress: FakeWordPress,
) -> None:
    fake_wordpress.slow("upload_media", delay_s=1.5)
    async with _client(fake_wordpress, timeout_s=0.3) as client:
        error = await _error_of(
            client.upload_media(b"\x89PNG...", "igny8-image-7.png", "image/png")
        )
        assert (error.code, error.retryable) == ("timeout", True)
        found = await client.find_media("igny8-image-7")
    assert isinstance(found, Media) and found.id == fake_wordpress.media[0]["id"]
    assert len(fake_wordpress.media) == 1


async def test_a_site_down_for_good_stays_retryable(fake_wordpress: FakeWordPress) -> None:
    fake_wordpress.down()
    async with _client(fake_wordpress) as client:
        for call in (client.check, lambda: client.create_post("T", "c", "down")):
            error = await _error_of(call())
            assert (error.code, error.status, error.retryable) == ("server_error", 503, True)
            assert error.retry_after == 30
    fake_wordpress.stop()
    async with _client(fake_wordpress) as client:
        error = await _error_of(client.create_post("T", "c", "down"))
    assert (error.code, error.retryable) == ("unreachable", True)
    assert fake_wordpress.posts == []


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "invalid_request", False),
        (401, "auth_error", False),
        (403, "forbidden", False),
        (404, "not_found", False),
        (408, "timeout", True),
        (409, "invalid_request", False),
        (429, "rate_limited", True),
        (500, "server_error", True),
        (502, "server_error", True),
        (503, "server_error", True),
        (301, "redirected", False),
    ],
)
async def test_http_statuses_are_classified_for_temporal(
    fake_wordpress: FakeWordPress, status: int, code: str, retryable: bool
) -> None:
    headers = {"Retry-After": "7"} if status == 429 else {}
    if status == 301:
        headers = {"Location": "https://example.org/"}
    fake_wordpress.fail("create_post", status, headers=headers)
    async with _client(fake_wordpress) as client:
        error = await _error_of(client.create_post("T", "c", "classified"))
    assert (error.code, error.status, error.retryable) == (code, status, retryable)
    if status == 429:
        assert error.retry_after == 7
    if status == 301:
        assert "https://example.org/" in error.message
    _assert_secret_free(error, DEFAULT_APP_PASSWORD)
    clone = pickle.loads(pickle.dumps(error))
    assert isinstance(clone, WordPressError) and clone.to_details() == error.to_details()


async def test_a_200_that_is_not_the_rest_index_is_not_wordpress(
    fake_wordpress: FakeWordPress,
) -> None:
    fake_wordpress.fail("index", 200, body={"hello": "world"})
    async with _client(fake_wordpress) as client:
        error = await _error_of(client.check())
    assert (error.code, error.retryable) == ("not_wordpress", False)


async def test_a_user_who_may_not_publish_fails_the_check(fake_wordpress: FakeWordPress) -> None:
    fake_wordpress.state.capabilities = {"subscriber": True, "read": True}
    async with _client(fake_wordpress) as client:
        error = await _error_of(client.check())
    assert (error.code, error.retryable) == ("forbidden", False)
    assert "publish_posts" in error.message


async def test_plain_permalinks_fall_back_to_rest_route(fake_wordpress: FakeWordPress) -> None:
    fake_wordpress.state.pretty_permalinks = False
    async with _client(fake_wordpress) as client:
        await client.check()
        post = await client.create_post("T", "c", "plain-links")
        assert await client.find_post_by_slug("plain-links") == post
    assert isinstance(post, Post) and fake_wordpress.calls("create_post") == 1


async def test_a_self_signed_certificate_is_a_tls_error(tmp_path: Path) -> None:
    with FakeWordPress(tls=self_signed_certificate(tmp_path)) as fake:
        async with _client(fake) as client:
            error = await _error_of(client.check())
    assert (error.code, error.retryable) == ("tls_error", False)
    assert "certificate" in error.message.lower()


def test_upload_file_names_are_header_safe() -> None:
    assert safe_filename('café "menu"/../x.PNG', "image/png") == "x.png"
    assert safe_filename("café menu", "image/jpeg") == "caf-menu.jpg"
    assert safe_filename("", "image/webp") == "image.webp"


async def test_a_published_post_link_on_the_fake_opens_with_its_featured_image(
    fake_wordpress: FakeWordPress,
) -> None:
    """`make run` falls back to the fake where no real WordPress can run: the calendar's
    links must still open, drafts and unknown slugs must not."""
    async with _client(fake_wordpress) as client:
        media = await client.upload_media(
            draw_png("demo", 8, 8), "demo.png", "image/png", alt_text="A <demo> cup"
        )
        post = await client.create_post(
            "Brew & Taste", "<p>Body text</p>", "brew-taste", featured_media=media.id
        )
        draft = await client.create_post("Draft", "<p>x</p>", "a-draft", status="draft")
    async with httpx.AsyncClient() as http:
        page = await http.get(post.link)
        assert page.status_code == 200
        assert "<h1>Brew &amp; Taste</h1>" in page.text and "<p>Body text</p>" in page.text
        assert f'src="{media.source_url}" alt="A &lt;demo&gt; cup"' in page.text
        assert (await http.get(draft.link)).status_code == 404
        assert (await http.get(f"{fake_wordpress.url}/no-such-post/")).status_code == 404
