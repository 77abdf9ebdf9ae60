"""Publishing to WordPress from our own clock (DESIGN §8): at the slot and not before,
exactly one post and one media item per image whatever retries or crashes happen, and a
clear failure when WordPress is gone for good."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlmodel import Session
from temporalio.client import Client
from temporalio.worker import Worker

from activities.publishing import (
    ImageRef,
    PublisherInput,
    PublishingActivities,
    media_title,
    poke_publisher,
    publisher_id,
)
from domain.secrets import encrypt
from models import Content, Image, Notification
from models.db import utcnow
from models.runs import WordPressIntegration
from providers.media_store import LocalMediaStore, image_key
from providers.wordpress import WordPressClient
from simulator.png import draw_png
from tests import builders
from tests.fake_wordpress import DEFAULT_APP_PASSWORD, DEFAULT_USER, FakeWordPress
from tests.fakes import World
from worker import WORKFLOWS
from workflows.publisher import PublisherWorkflow

pytestmark = pytest.mark.temporal
SECRET = "test-secret-key"
ARTICLE = (
    "<p>Intro.</p><h2>Grind size</h2><p>Fine.</p><h2>Water</h2><p>Hot.</p>"
    "<h2>Steeping</h2><p>Long.</p>"
)


def article(engine, media_dir: Path, wp_url: str, user: str, password: str, **content):
    """An approved article with a featured and one in-article image stored, on a site
    connected to WordPress."""
    acct, _ = builders.account(engine, credits=10)
    site = builders.site(engine, acct, timezone="Europe/Berlin")
    with Session(engine, expire_on_commit=False) as session:
        session.add(
            WordPressIntegration(
                account_id=acct,
                site_id=site.id,
                base_url=wp_url,
                username=user,
                password_encrypted=encrypt(password, SECRET),
            )
        )
        session.commit()
    return acct, site.id, another_article(engine, media_dir, acct, site.id, **content)


def another_article(
    engine, media_dir: Path, acct: int, site_id: int, title: str = "Cold Brew at Home", **content
) -> int:
    """One more approved article with its two stored images, on the same site."""
    task, row = builders.task_with_content(engine, acct, site_id, title)
    store = LocalMediaStore(media_dir)
    slug = content.pop("slug", f"cold-brew-at-home-{uuid.uuid4().hex[:6]}")
    with Session(engine, expire_on_commit=False) as session:
        c = session.get(Content, row.id)
        c.sqlmodel_update({"html": ARTICLE, "status": "approved", "slug": slug,
                           "meta_description": "How to make cold brew at home.", **content})  # fmt: skip
        session.add(c)
        for position, kind in enumerate(("featured", "in_article")):
            image = Image(account_id=acct, site_id=site_id, task_id=task.id, content_id=c.id,
                          image_type=kind, position=position, status="generated",
                          alt_text=f"{kind} alt", mime_type="image/png")  # fmt: skip
            session.add(image)
            session.flush()
            key = image_key(acct, image.id, "image/png")
            store.put(key, draw_png(f"image {position}", 16, 16), "image/png")
            image.file_path = key
        session.commit()
        return c.id


def schedule(engine, content_id: int, at) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Content.__table__)
            .where(Content.__table__.c.id == content_id)
            .values(site_status="scheduled", scheduled_publish_at=at)
        )


def content_row(engine, content_id: int):
    with engine.connect() as conn:
        t = Content.__table__
        return conn.execute(select(t).where(t.c.id == content_id)).first()


def images_of(engine, content_id: int):
    with engine.connect() as conn:
        t = Image.__table__
        return conn.execute(
            select(t).where(t.c.content_id == content_id).order_by(t.c.position)
        ).all()


def notes(engine, kind: str):
    with engine.connect() as conn:
        t = Notification.__table__
        return conn.execute(select(t).where(t.c.notification_type == kind)).all()


def quick_client(
    base_url: str, username: str, password: str, http: httpx.AsyncClient
) -> WordPressClient:
    """A client that gives up after 3 s: a test's "timeout after the post was made"."""
    return WordPressClient(base_url, username, password, timeout_s=3.0, http=http)


@asynccontextmanager
async def publisher_worker(client: Client, engine, media_dir: Path) -> AsyncIterator[str]:
    queue = f"publish-{uuid.uuid4().hex}"
    acts = PublishingActivities(engine, LocalMediaStore(media_dir), SECRET, quick_client)
    with ThreadPoolExecutor(8) as pool:
        async with Worker(
            client,
            task_queue=queue,
            workflows=list(WORKFLOWS),
            activities=[
                acts.publishing_agenda,
                acts.start_publish,
                acts.upload_image,
                acts.create_post,
                acts.publish_article,
                acts.finish_publish,
                acts.publish_due,
                acts.publish_lane,
                acts.fail_publish,
            ],
            activity_executor=pool,
        ):
            yield queue


async def counted(handle, n: int, timeout_s: float = 60.0):
    """The publisher's status once it has counted `n` articles (published or failed)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        status = await handle.query(PublisherWorkflow.status)
        if status.published + status.failed >= n:
            return status
        assert asyncio.get_running_loop().time() < deadline, f"never counted {n}: {status}"
        await asyncio.sleep(0.1)


async def until(predicate, timeout_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.1)


@pytest.fixture
def fake() -> Iterator[FakeWordPress]:
    wp = FakeWordPress().start()
    yield wp
    wp.stop()


async def stop_publisher(client: Client, acct: int, site_id: int) -> None:
    await client.get_workflow_handle(publisher_id(acct, site_id)).terminate()


async def test_a_scheduled_article_publishes_at_its_slot_and_not_before(
    time_skipping_env, engine, tmp_path, fake
):
    acct, site_id, content_id = article(
        engine, tmp_path, fake.url, DEFAULT_USER, DEFAULT_APP_PASSWORD
    )
    env = time_skipping_env
    slot = (await env.get_current_time()) + timedelta(hours=2)
    schedule(engine, content_id, slot)
    async with publisher_worker(env.client, engine, tmp_path) as queue:
        await poke_publisher(env.client, queue, acct, site_id)
        await env.sleep(timedelta(hours=1, minutes=50))
        assert content_row(engine, content_id).site_status == "scheduled" and not fake.posts
        await env.sleep(timedelta(minutes=15))
        await until(lambda: content_row(engine, content_id).site_status == "published")
        await stop_publisher(env.client, acct, site_id)
    row = content_row(engine, content_id)
    assert row.published_at >= slot and len(fake.posts) == 1 and len(fake.media) == 2
    assert row.external_id == str(fake.posts[0]["id"]) and row.external_url
    # in one attempt: only a retry looks up what an earlier attempt may have made
    assert (fake.calls("upload_media"), fake.calls("create_post")) == (2, 1)
    assert fake.calls("list_media") == fake.calls("list_posts") == 0
    assert len(notes(engine, "content_published")) == 1


async def test_a_rescheduled_article_waits_for_its_new_slot(
    time_skipping_env, engine, tmp_path, fake
):
    acct, site_id, content_id = article(
        engine, tmp_path, fake.url, DEFAULT_USER, DEFAULT_APP_PASSWORD
    )
    env = time_skipping_env
    now = await env.get_current_time()
    schedule(engine, content_id, now + timedelta(hours=1))
    async with publisher_worker(env.client, engine, tmp_path) as queue:
        await poke_publisher(env.client, queue, acct, site_id)
        schedule(engine, content_id, now + timedelta(hours=5))  # moved before its slot
        await poke_publisher(env.client, queue, acct, site_id)
        await env.sleep(timedelta(hours=2))
        assert content_row(engine, content_id).site_status == "scheduled" and not fake.posts
        await env.sleep(timedelta(hours=3, minutes=5))
        await until(lambda: content_row(engine, content_id).site_status == "published")
        await stop_publisher(env.client, acct, site_id)
    assert len(fake.posts) == 1


async def _publish_now(client: Client, engine, tmp_path, acct, site_id, content_id) -> None:
    schedule(engine, content_id, utcnow() - timedelta(seconds=1))
    async with publisher_worker(client, engine, tmp_path) as queue:
        await poke_publisher(client, queue, acct, site_id)
        await until(
            lambda: content_row(engine, content_id).site_status in ("published", "failed"),
            timeout_s=120,
        )
        await stop_publisher(client, acct, site_id)


async def test_a_500_on_the_first_try_then_success_makes_one_post(
    temporal_env, engine, tmp_path, fake
):
    acct, site_id, content_id = article(
        engine, tmp_path, fake.url, DEFAULT_USER, DEFAULT_APP_PASSWORD
    )
    fake.fail("create_post", 500)
    await _publish_now(temporal_env.client, engine, tmp_path, acct, site_id, content_id)
    assert content_row(engine, content_id).site_status == "published"
    assert len(fake.posts) == 1 and fake.calls("create_post") == 2


async def test_a_backlog_lane_fails_a_refused_article_alone_and_retries_the_rest_once(
    temporal_env, engine, tmp_path, fake
):
    """Six articles due at once go out in lanes (more than the concurrency of four): the
    post WordPress refuses for good (403) fails that article only, with its notification;
    a 500 on an upload retries its lane, which makes nothing twice."""
    acct, site_id, first = article(engine, tmp_path, fake.url, DEFAULT_USER, DEFAULT_APP_PASSWORD)
    ids = [first] + [
        another_article(engine, tmp_path, acct, site_id, title=f"Brew {n}") for n in range(5)
    ]
    fake.fail("create_post", 403)  # the first post any lane makes
    fake.fail("upload_media", 500)  # the first upload any lane makes
    now = utcnow() - timedelta(seconds=1)
    for content_id in ids:
        schedule(engine, content_id, now)
    async with publisher_worker(temporal_env.client, engine, tmp_path) as queue:
        await poke_publisher(temporal_env.client, queue, acct, site_id)
        await until(
            lambda: all(content_row(engine, c).site_status in ("published", "failed") for c in ids),
            timeout_s=120,
        )
        handle = temporal_env.client.get_workflow_handle(publisher_id(acct, site_id))
        # the rows are written inside the lanes; the workflow counts a lane when it ends
        status = await counted(handle, 6)
        history = await handle.fetch_history()
        await stop_publisher(temporal_env.client, acct, site_id)
    statuses = sorted(content_row(engine, c).site_status for c in ids)
    assert statuses == ["failed"] + ["published"] * 5
    assert (status.published, status.failed) == (5, 1)
    failures = notes(engine, "content_publish_failed")
    assert len(failures) == 1 and "could not be published" in failures[0].message
    assert len(notes(engine, "content_published")) == 5
    # one post per published article and one media item per image: nothing twice
    assert len(fake.posts) == 5 and len({p["slug"] for p in fake.posts}) == 5
    assert len(fake.media) == len({m["title"]["raw"] for m in fake.media}) == 12
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert "publish_lane" in scheduled and "publish_due" not in scheduled, scheduled


async def test_a_timeout_after_the_post_was_made_still_makes_one_post(
    temporal_env, engine, tmp_path, fake
):
    acct, site_id, content_id = article(
        engine, tmp_path, fake.url, DEFAULT_USER, DEFAULT_APP_PASSWORD
    )
    fake.slow("create_post", 6)  # beyond the client's 3 s: the post is made, the answer lost
    await _publish_now(temporal_env.client, engine, tmp_path, acct, site_id, content_id)
    row = content_row(engine, content_id)
    assert row.site_status == "published" and len(fake.posts) == 1
    assert row.external_id == str(fake.posts[0]["id"])


async def test_wordpress_down_for_good_ends_failed_with_a_notification(
    time_skipping_env, engine, tmp_path, fake
):
    acct, site_id, content_id = article(
        engine, tmp_path, fake.url, DEFAULT_USER, DEFAULT_APP_PASSWORD
    )
    fake.down(503)
    env = time_skipping_env
    schedule(engine, content_id, (await env.get_current_time()) - timedelta(seconds=1))
    async with publisher_worker(env.client, engine, tmp_path) as queue:
        await poke_publisher(env.client, queue, acct, site_id)
        for _ in range(60):  # the retries' back-off is skipped time
            await env.sleep(timedelta(minutes=1))
            if content_row(engine, content_id).site_status == "failed":
                break
        await stop_publisher(env.client, acct, site_id)
    row = content_row(engine, content_id)
    assert row.site_status == "failed" and row.publish_error
    failures = notes(engine, "content_publish_failed")
    assert len(failures) == 1 and "could not be published" in failures[0].message
    assert not fake.posts


async def test_against_real_wordpress_the_article_its_images_and_their_alt_texts(
    temporal_env, engine, tmp_path, wordpress
):
    acct, site_id, content_id = article(
        engine, tmp_path, wordpress.base_url, wordpress.username, wordpress.app_password
    )
    # a worker killed between an image upload and the post: the upload was stored
    acts = PublishingActivities(engine, LocalMediaStore(tmp_path), SECRET)
    first = images_of(engine, content_id)[0]
    from temporalio.testing import ActivityEnvironment

    uploaded = await ActivityEnvironment().run(
        acts.upload_image, ImageRef(content_id=content_id, image_id=first.id)
    )
    await _publish_now(temporal_env.client, engine, tmp_path, acct, site_id, content_id)
    row, images = content_row(engine, content_id), images_of(engine, content_id)
    assert row.site_status == "published" and images[0].external_media_id == uploaded
    async with WordPressClient(
        wordpress.base_url, wordpress.username, wordpress.app_password
    ) as wp:
        post = await wp.find_post_by_slug(row.slug)
        assert post is not None and str(post.id) == row.external_id
        for image in images:
            media = await wp.find_media(media_title(image))
            assert media is not None and media.id == image.external_media_id
            assert media.alt_text == image.alt_text
            served = httpx.get(media.source_url, timeout=10)
            assert served.content == LocalMediaStore(tmp_path).get(image.file_path)
        raw = httpx.get(
            f"{wordpress.base_url}/wp-json/wp/v2/posts/{post.id}?context=edit",
            auth=(wordpress.username, wordpress.app_password),
            timeout=10,
        ).json()
    assert raw["featured_media"] == images[0].external_media_id
    assert raw["slug"] == row.slug and "How to make cold brew" in raw["excerpt"]["raw"]
    assert (
        images[1].external_url in raw["content"]["raw"]
        and 'alt="in_article alt"' in raw["content"]["raw"]
    )
    # publishing the same article again makes nothing new
    schedule(engine, content_id, utcnow() - timedelta(seconds=1))
    await _publish_now(temporal_env.client, engine, tmp_path, acct, site_id, content_id)
    assert content_row(engine, content_id).external_id == row.external_id
    async with WordPressClient(
        wordpress.base_url, wordpress.username, wordpress.app_password
    ) as wp:
        again = await wp.find_post_by_slug(row.slug)
        assert again is not None and again.id == post.id


async def test_a_backlog_continues_as_new_and_publishes_each_article_once(temporal_env):
    """Hundreds of articles due at once (WordPress was down for a day) must not grow one
    history without bound: past its limit the publisher continues as new, and the next
    run's agenda has the rest. Fake activities: only the workflow's rule is under test."""
    world = World(publish_due=list(range(1, 81)))
    queue, limit = f"backlog-{uuid.uuid4().hex}", 60
    client = temporal_env.client
    async with Worker(
        client, task_queue=queue, workflows=list(WORKFLOWS), activities=world.activities()
    ):
        handle = await client.start_workflow(
            PublisherWorkflow.run,
            # lanes of two articles: forty lane activities fill several histories
            PublisherInput(account_id=1, site_id=99, history_limit=limit, lane_articles=2),
            id=publisher_id(1, 99),
            task_queue=queue,
        )
        await until(lambda: len(world.published) == 80)
        lengths, run_id = [], handle.first_execution_run_id
        while run_id:
            history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
            lengths.append(len(history.events))
            last = history.events[-1]
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        status = await handle.query(PublisherWorkflow.status)
        await handle.terminate()
    assert sorted(world.published) == list(range(1, 81))  # each once, none lost
    assert len(world.uploads) == 160 and not world.publish_failed
    assert len(lengths) >= 3, lengths  # it did continue as new
    # past the limit no article starts; those in flight (up to `concurrency`) finish
    one_article = 30  # claim, two uploads, the post and the finish, with their tasks
    bound = limit + PublisherInput(account_id=1, site_id=1).concurrency * one_article
    assert all(n < bound for n in lengths[:-1]), lengths
    assert status.published == 80  # the count survives continue-as-new


async def test_a_backlog_goes_out_several_at_a_time_each_article_in_order(temporal_env):
    """Articles due at once are published `concurrency` at a time (not one after another,
    not all at once), in lanes of `lane_articles` one after another, about in slot order;
    each article's steps keep their order: claim, uploads, post, finish."""
    world = World(publish_due=list(range(1, 11)), publish_gate=asyncio.Event())
    queue, client = f"together-{uuid.uuid4().hex}", temporal_env.client
    async with Worker(
        client, task_queue=queue, workflows=list(WORKFLOWS), activities=world.activities()
    ):
        handle = await client.start_workflow(
            PublisherWorkflow.run,
            PublisherInput(account_id=1, site_id=98, concurrency=3, lane_articles=2),
            id=publisher_id(1, 98),
            task_queue=queue,
        )
        await until(lambda: world.publishing_now == 3)  # three held mid-publish at once
        world.publish_gate.set()
        await until(lambda: len(world.published) == 10)
        await handle.terminate()
    assert sorted(world.published) == list(range(1, 11))
    assert world.publishing_peak == 3, world.publishing_peak
    for content_id in range(1, 11):
        steps = [step for c, step in world.publish_steps if c == content_id]
        assert steps == ["start", "upload", "upload", "post", "finish"], (content_id, steps)
    starts = [c for c, step in world.publish_steps if step == "start"]
    assert sorted(starts) == list(range(1, 11)) and sorted(starts[:3]) == [1, 2, 3]
    # about in slot order: the lanes side by side put no article more than two places off
    assert all(abs(place - (c - 1)) < 3 for place, c in enumerate(starts)), starts
