"""Publishing activities: what is due on a site, and the steps that put one article on
WordPress exactly once (DESIGN §8).

Each remote id is stored before the next step: an image's media item before the post is
made, the post before the article is marked published. A step whose outcome is unknown
(a timeout, a crash) looks first: the media item by its deterministic title, the post by
its slug across all statuses. So whatever retries, timeouts or crashes happen, an article
is one post and each image one media item.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import httpx
from sqlalchemy import Engine, select, update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.common import Frozen
from core import metrics
from core.logs import register_secret
from domain import tasklogs
from domain.secrets import decrypt
from models.db import utcnow
from models.pipeline import Content, Image
from models.runs import WordPressIntegration
from providers.base import ProviderError
from providers.media_store import MediaStore
from providers.wordpress import Media, Post, WordPressClient

CONTENT = Content.__table__
IMAGES = Image.__table__
INTEGRATIONS = WordPressIntegration.__table__
H2_END = re.compile(r"</h2>", re.IGNORECASE)

ClientFactory = Callable[[str, str, str, httpx.AsyncClient], WordPressClient]


class PublisherInput(Frozen):
    """The site's publisher workflow: one per site, `publisher-<account>-<site>`."""

    account_id: int
    site_id: int
    published: int = 0
    failed: int = 0
    # events before the publisher continues as new (one article is about 25)
    history_limit: int = 4000
    # articles of a backlog published at once (each one's steps stay in order)
    concurrency: int = 4
    # a backlog's articles per activity, published one after another (a "lane")
    lane_articles: int = 10


def publisher_id(account_id: int, site_id: int) -> str:
    return f"publisher-{account_id}-{site_id}"


async def poke_publisher(client: Any, task_queue: str, account_id: int, site_id: int) -> None:
    """Start the site's publisher, or tell the running one its schedule changed
    (signal-with-start: one call, whichever is the case)."""
    from temporalio.common import WorkflowIDConflictPolicy

    await client.start_workflow(
        "PublisherWorkflow",
        PublisherInput(account_id=account_id, site_id=site_id),
        id=publisher_id(account_id, site_id),
        task_queue=task_queue,
        start_signal="poke",
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Publishes site {site_id}'s scheduled articles at their slots",
    )


class SiteRef(Frozen):
    account_id: int
    site_id: int


class PokeActivities:
    """Activities that talk to Temporal itself: the automation run's last stage pokes the
    site's publisher when it has scheduled articles."""

    def __init__(self, client: Any, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    @activity.defn(name="poke_publisher")
    async def poke_publisher(self, inp: SiteRef) -> None:
        await poke_publisher(self.client, self.task_queue, inp.account_id, inp.site_id)


class AgendaInput(Frozen):
    site_id: int
    now: datetime  # the workflow's clock, so a replay and the time-skipping server agree


class Agenda(Frozen):
    due: list[int]  # scheduled content whose slot has come, oldest slot first
    next_at: datetime | None  # the next slot still ahead


class ContentRef(Frozen):
    content_id: int


class ImageRef(Frozen):
    content_id: int
    image_id: int


class PublishJob(Frozen):
    content_id: int
    ready: bool  # still scheduled and due (an unschedule or reschedule meanwhile: False)
    image_ids: list[int] = []
    external_id: str | None = None


class Published(Frozen):
    content_id: int
    post_id: int
    url: str
    published_at: datetime | None = None  # the workflow's clock when the post went live


class PublishDueInput(Frozen):
    content_id: int
    now: datetime  # the workflow's clock as it started the article: its published_at


class PublishOutcome(Frozen):
    content_id: int
    published: Published | None = None  # None: no longer due (unscheduled or moved)
    error: str | None = None  # set when it failed for good (and is marked failed)


class PublishLaneInput(Frozen):
    content_ids: list[int]  # published in this order, one after another
    now: datetime


class LaneOutcome(Frozen):
    outcomes: list[PublishOutcome]  # one per article, in order


class PublishFailure(Frozen):
    content_id: int
    error: str


def wordpress_client(
    base_url: str, username: str, password: str, http: httpx.AsyncClient
) -> WordPressClient:
    return WordPressClient(base_url, username, password, timeout_s=30.0, http=http)


class PublishingActivities:
    """Dependencies: the database, the media store, the secret the WordPress passwords are
    encrypted with, and how to make a WordPress client (tests hand in the fake's)."""

    def __init__(
        self,
        engine: Engine,
        store: MediaStore,
        secret_key: str,
        client_factory: ClientFactory = wordpress_client,
    ) -> None:
        self.engine = engine
        self.store = store
        self.secret_key = secret_key
        self.client_factory = client_factory
        # one pooled HTTP client for every WordPress call of this worker: making one per
        # call costs an SSL context (about 50 ms of CPU here), per image and per post
        self._http: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ---- the agenda ----------------------------------------------------------------
    @activity.defn(name="publishing_agenda")
    def publishing_agenda(self, inp: AgendaInput) -> Agenda:
        """Due content (its slot has come) and the next slot ahead, from the database:
        the schedule's one source of truth (unschedule and reschedule change only it)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(CONTENT.c.id, CONTENT.c.scheduled_publish_at)
                .where(
                    CONTENT.c.site_id == inp.site_id,
                    CONTENT.c.site_status == "scheduled",
                    CONTENT.c.scheduled_publish_at.is_not(None),
                )
                .order_by(CONTENT.c.scheduled_publish_at, CONTENT.c.id)
            ).all()
        due = [r.id for r in rows if r.scheduled_publish_at <= inp.now]
        ahead = [r.scheduled_publish_at for r in rows if r.scheduled_publish_at > inp.now]
        return Agenda(due=due, next_at=ahead[0] if ahead else None)

    # ---- one article -----------------------------------------------------------------
    @activity.defn(name="publish_lane")
    async def publish_lane(self, inp: PublishLaneInput) -> LaneOutcome:
        """A lane of a backlog: its articles one after another, each as `publish_due`
        does it, with no Temporal round trip between them. An article WordPress refuses
        for good (a non-retryable error) is marked failed here and the lane goes on; any
        other error fails the attempt, and the retry skips what is already published."""
        outcomes = []
        for content_id in inp.content_ids:
            try:
                out = await self.publish_due(PublishDueInput(content_id=content_id, now=inp.now))
            except ApplicationError as err:
                if not err.non_retryable:
                    raise
                failure = PublishFailure(content_id=content_id, error=str(err))
                await asyncio.to_thread(self.fail_publish, failure)
                out = PublishOutcome(content_id=content_id, error=failure.error)
            outcomes.append(out)
            activity.heartbeat(content_id)
        return LaneOutcome(outcomes=outcomes)

    @activity.defn(name="publish_due")
    async def publish_due(self, inp: PublishDueInput) -> PublishOutcome:
        """One due article whole: claim it, upload its images, make the post and mark it
        published (start_publish, publish_article and finish_publish in one activity: two
        Temporal round trips an article fewer, and three database visits where the steps
        took nine). Each remote id is still stored the moment WordPress answers, so a
        retry picks up where the last attempt stopped; an article found published (by an
        earlier attempt: only its site's publisher publishes it) is reported published."""
        cid = inp.content_id
        whole = await asyncio.to_thread(self._claim_whole, cid)
        if whole is None:  # not due: moved or unscheduled, or done by an earlier attempt
            article, _ = await asyncio.to_thread(self._article, cid)
            if article.site_status == "published":
                return PublishOutcome(content_id=cid, published=self._published(article))
            if article.site_status == "failed" and activity.info().attempt > 1:
                return PublishOutcome(content_id=cid, error=article.publish_error or "failed")
            return PublishOutcome(content_id=cid)
        article, images, (base_url, username, password) = whole
        if article.external_id:  # an earlier attempt made the post: record it
            published = self._published(article)
        else:
            if self._http is None:
                self._http = httpx.AsyncClient()
            wp = self.client_factory(base_url, username, password, self._http)
            for image in images:
                if not image.external_media_id:
                    media = await self._upload_media(wp, image)
                    image.external_media_id, image.external_url = media.id, media.source_url
                activity.heartbeat(image.id)
            post = await self._create_post(wp, article, images)
            published = Published(content_id=cid, post_id=post.id, url=post.link)
        published = published.model_copy(update={"published_at": inp.now})
        await asyncio.to_thread(self._finish, published)
        return PublishOutcome(content_id=cid, published=published)

    def _claim_whole(
        self, content_id: int
    ) -> tuple[Any, list[SimpleNamespace], tuple[str, str, str]] | None:
        """The claim, the article, its images and the site's WordPress connection in one
        transaction; None when the article is no longer due."""
        with self.engine.begin() as conn:
            article = self._claim_in(conn, content_id)
            if article is None:
                return None
            images = conn.execute(
                select(IMAGES)
                .where(IMAGES.c.content_id == content_id, IMAGES.c.status == "generated")
                .order_by(IMAGES.c.position)
            ).all()
            integration = self._integration(conn, content_id)
        return article, [SimpleNamespace(**i._mapping) for i in images], integration

    @activity.defn(name="start_publish")
    def start_publish(self, inp: ContentRef) -> PublishJob:
        """Claim a due article for publishing (scheduled → publishing); a retry after a
        crash finds it publishing and goes on."""
        return self._claim(inp.content_id)

    def _claim(self, content_id: int) -> PublishJob:
        with self.engine.begin() as conn:
            row = self._claim_in(conn, content_id)
            if row is None:
                return PublishJob(content_id=content_id, ready=False)
            images = conn.execute(
                select(IMAGES.c.id)
                .where(IMAGES.c.content_id == content_id, IMAGES.c.status == "generated")
                .order_by(IMAGES.c.position)
            ).scalars()
            return PublishJob(
                content_id=content_id,
                ready=True,
                image_ids=list(images),
                external_id=row.external_id,
            )

    @staticmethod
    def _claim_in(conn: Any, content_id: int) -> Any:
        """scheduled (or publishing, on a retry) → publishing; the article's row, or None
        when it is no longer due (unscheduled, moved, published, failed)."""
        row = conn.execute(select(CONTENT).where(CONTENT.c.id == content_id)).first()
        if row is None or row.site_status not in ("scheduled", "publishing"):
            return None
        conn.execute(
            update(CONTENT)
            .where(CONTENT.c.id == content_id)
            .values(site_status="publishing", publish_error=None, updated_at=utcnow())
        )
        return row

    @activity.defn(name="upload_image")
    async def upload_image(self, inp: ImageRef) -> int:
        """The image as a WordPress media item with its alt text, once: a stored media id
        is reused; an upload whose outcome is unknown is found by its title first."""
        image = await asyncio.to_thread(self._image, inp.image_id)
        if image.external_media_id:
            return int(image.external_media_id)
        async with await self._client(inp.content_id) as wp:
            return await self._upload(wp, image)

    @activity.defn(name="create_post")
    async def create_post(self, inp: ContentRef) -> Published:
        """The post, once: a stored post id is reused; a create whose outcome is unknown
        (a retry) looks the post up by its slug across all statuses first."""
        article, images = await asyncio.to_thread(self._article, inp.content_id)
        if article.external_id:
            return self._published(article)
        async with await self._client(inp.content_id) as wp:
            return await self._post(wp, article, images)

    @activity.defn(name="publish_article")
    async def publish_article(self, inp: ContentRef) -> Published:
        """Every image as a media item, then the post: upload_image and create_post in
        one activity, two Temporal round trips an image fewer. Exactly once all the same:
        each remote id is stored the moment WordPress answers, so a retry (a crash, a
        timeout, a 5xx) skips what is stored and looks up what may have been made."""
        article, images = await asyncio.to_thread(self._article, inp.content_id)
        if article.external_id:
            return self._published(article)
        async with await self._client(inp.content_id) as wp:
            for image in images:
                if not image.external_media_id:
                    await self._upload(wp, image)
                activity.heartbeat(image.id)
            article, images = await asyncio.to_thread(self._article, inp.content_id)
            return await self._post(wp, article, images)

    async def _upload(self, wp: WordPressClient, image: Any) -> int:
        return (await self._upload_media(wp, image)).id

    async def _upload_media(self, wp: WordPressClient, image: Any) -> Media:
        """The image's media item, made once and its id stored at once; a retry (whose
        last upload may have landed) looks it up by its title first."""
        title = media_title(image)
        media = await wp.find_media(title) if activity.info().attempt > 1 else None
        if media is None:
            data = await asyncio.to_thread(self.store.get, image.file_path)
            filename = f"{title}.{image.file_path.rsplit('.', 1)[-1]}"
            media = await self._call(
                wp.upload_media(
                    data, filename, image.mime_type or "image/png", image.alt_text, title
                )
            )
        await asyncio.to_thread(self._store_media, image.id, media)
        return media

    async def _post(self, wp: WordPressClient, article: Any, images: list[Any]) -> Published:
        post = await self._create_post(wp, article, images)
        await asyncio.to_thread(self._store_post, article.id, post)
        return Published(content_id=article.id, post_id=post.id, url=post.link)

    async def _create_post(self, wp: WordPressClient, article: Any, images: list[Any]) -> Post:
        """The post, made once: a retry (whose last create may have landed) looks it up
        by its slug across all statuses first."""
        post = await wp.find_post_by_slug(article.slug) if activity.info().attempt > 1 else None
        if post is None:
            featured = next((i for i in images if i.image_type == "featured"), None)
            post = await self._call(
                wp.create_post(
                    title=article.title,
                    content=with_images(
                        article.html, [i for i in images if i.image_type != "featured"]
                    ),
                    slug=article.slug,
                    excerpt=article.meta_description,
                    featured_media=featured.external_media_id if featured else None,
                )
            )
        return post

    @staticmethod
    def _published(article: Any) -> Published:
        return Published(
            content_id=article.id,
            post_id=int(article.external_id),
            url=article.external_url or "",
        )

    @activity.defn(name="finish_publish")
    def finish_publish(self, inp: Published) -> None:
        """Published: the article's state, and a `content_published` notification."""
        self._finish(inp)

    def _finish(self, inp: Published) -> None:
        with self.engine.begin() as conn:
            at = inp.published_at or utcnow()
            before = self._site_status(conn, inp.content_id)
            row = self._mark(
                conn,
                inp.content_id,
                "published",
                published_at=at,
                external_id=str(inp.post_id),  # publish_due stores the post id only here
                external_url=inp.url,
            )
        if before != "published":  # committed; a retried finish counts nothing
            metrics.PUBLISH.labels("published").inc()
        tasklogs.notify(
            self.engine,
            account_id=row.account_id,
            notification_type="content_published",
            title="Article published",
            message=f'"{row.title}" is live at {inp.url}',
            idempotency_key=f"publish:{inp.content_id}:{inp.post_id}:published",
            details={"content_id": inp.content_id, "url": inp.url, "post_id": inp.post_id},
            related_object_type="content",
            related_object_id=inp.content_id,
        )

    @activity.defn(name="fail_publish")
    def fail_publish(self, inp: PublishFailure) -> None:
        """Retries ran out: failed, with the error, and a `content_publish_failed`
        notification (keyed by the attempt's time of failure: each failure is news)."""
        with self.engine.begin() as conn:
            before = self._site_status(conn, inp.content_id)
            row = self._mark(conn, inp.content_id, "failed", publish_error=inp.error[:4000])
        if before != "failed":
            metrics.PUBLISH.labels("failed").inc()
        tasklogs.notify(
            self.engine,
            account_id=row.account_id,
            notification_type="content_publish_failed",
            title="Publishing failed",
            message=f'"{row.title}" could not be published: {inp.error}',
            idempotency_key=f"publish:{inp.content_id}:failed:{activity.info().workflow_run_id}",
            severity="error",
            details={"content_id": inp.content_id, "error": inp.error},
            related_object_type="content",
            related_object_id=inp.content_id,
        )

    # ---- helpers ---------------------------------------------------------------------
    def _image(self, image_id: int) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(select(IMAGES).where(IMAGES.c.id == image_id)).first()
        if row is None or not row.file_path:
            raise ApplicationError(f"Image {image_id} has no stored file", non_retryable=True)
        return row

    def _article(self, content_id: int) -> tuple[Any, list[Any]]:
        with self.engine.connect() as conn:
            article = conn.execute(select(CONTENT).where(CONTENT.c.id == content_id)).first()
            images = conn.execute(
                select(IMAGES)
                .where(IMAGES.c.content_id == content_id, IMAGES.c.status == "generated")
                .order_by(IMAGES.c.position)
            ).all()
        if article is None:
            raise ApplicationError(f"Content {content_id} does not exist", non_retryable=True)
        return article, list(images)

    async def _client(self, content_id: int) -> WordPressClient:
        """The site's WordPress client on this worker's pooled HTTP client. The database
        reads of these async activities run in threads: the event loop never waits."""
        base_url, username, password = await asyncio.to_thread(self._connection, content_id)
        if self._http is None:
            self._http = httpx.AsyncClient()
        return self.client_factory(base_url, username, password, self._http)

    def _connection(self, content_id: int) -> tuple[str, str, str]:
        with self.engine.connect() as conn:
            return self._integration(conn, content_id)

    def _integration(self, conn: Any, content_id: int) -> tuple[str, str, str]:
        """The article's site's WordPress (url, user, password), the password decrypted
        and registered as a secret, so no log line of this process shows it."""
        row = conn.execute(
            select(INTEGRATIONS)
            .join(CONTENT, CONTENT.c.site_id == INTEGRATIONS.c.site_id)
            .where(CONTENT.c.id == content_id, INTEGRATIONS.c.is_active.is_(True))
        ).first()
        if row is None:
            raise ApplicationError(
                "The site has no WordPress connection: add one under integrations",
                type="NoWordPress",
                non_retryable=True,
            )
        password = decrypt(row.password_encrypted, self.secret_key)
        register_secret(password)  # never in a log line of this process
        return row.base_url, row.username, password

    async def _call(self, awaitable: Any) -> Any:
        """A WordPress error as Temporal sees it: retried or not, with Retry-After."""
        try:
            return await awaitable
        except ProviderError as exc:
            delay = None
            if exc.retry_after:
                from datetime import timedelta

                delay = timedelta(seconds=exc.retry_after)
            raise ApplicationError(
                exc.message, type=exc.code, non_retryable=not exc.retryable, next_retry_delay=delay
            ) from exc

    def _store_media(self, image_id: int, media: Media) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(IMAGES)
                .where(IMAGES.c.id == image_id)
                .values(
                    external_media_id=media.id, external_url=media.source_url, updated_at=utcnow()
                )
            )

    def _store_post(self, content_id: int, post: Post) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(CONTENT)
                .where(CONTENT.c.id == content_id)
                .values(external_id=str(post.id), external_url=post.link, updated_at=utcnow())
            )

    @staticmethod
    def _site_status(conn: Any, content_id: int) -> str | None:
        return conn.execute(
            select(CONTENT.c.site_status).where(CONTENT.c.id == content_id)
        ).scalar_one_or_none()

    def _mark(self, conn: Any, content_id: int, status: str, **values: Any) -> Any:
        conn.execute(
            update(CONTENT)
            .where(CONTENT.c.id == content_id)
            .values(site_status=status, updated_at=utcnow(), **values)
        )
        return conn.execute(
            select(CONTENT.c.account_id, CONTENT.c.title).where(CONTENT.c.id == content_id)
        ).first()


def media_title(image: Any) -> str:
    """An image's media title on WordPress, deterministic so a lost upload is found again:
    its id and creation time (ids alone repeat across databases sharing one WordPress)."""
    return f"igny8-image-{image.id}-{image.created_at.strftime('%Y%m%d%H%M%S%f')}"


def with_images(html: str, images: list[Any]) -> str:
    """The article with its in-article images (as uploaded) after its sections' headings,
    in order: the first image after the first h2, and so on."""
    parts = H2_END.split(html)
    out = [parts[0]]
    for n, rest in enumerate(parts[1:]):
        out.append("</h2>")
        if n < len(images) and images[n].external_url:
            image = images[n]
            alt = (image.alt_text or "").replace('"', "&quot;")
            out.append(f'\n<figure><img src="{image.external_url}" alt="{alt}" /></figure>\n')
        out.append(rest)
    return "".join(out)
