"""PublisherWorkflow: one per site, it publishes the site's scheduled articles at their
slots from our own clock (DESIGN §8), never by handing WordPress a `future` post.

Why a workflow per site with a durable timer, and not a Temporal Schedule: the slots are
irregular (each article has its own, and people move them), a timer to the next slot fires
at that slot rather than at the next tick of a cron, and an idle site costs nothing. The
database holds the schedule; approving, scheduling, unscheduling or rescheduling an article
pokes the site's publisher (signal-with-start), which reads the agenda again and sleeps
until the next slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.common import Frozen
    from activities.publishing import (
        AgendaInput,
        ContentRef,
        ImageRef,
        PublishDueInput,
        Published,
        PublisherInput,
        PublishFailure,
        PublishingActivities,
        PublishLaneInput,
    )
    from workflows.engine.policies import DB_RETRY, DB_TIMEOUT, message

IDLE = timedelta(days=1)  # with nothing scheduled, look again once a day anyway
ROUNDS_BEFORE_CONTINUE = 200
PATCH_HISTORY_BOUND = "publisher-continues-as-new-past-its-history-limit"
PATCH_TOGETHER = "publisher-publishes-a-backlog-several-at-a-time"
PATCH_ONE_CALL = "publisher-uploads-and-posts-in-one-activity"
PATCH_WHOLE = "publisher-claims-publishes-and-records-in-one-activity"
PATCH_LANES = "publisher-publishes-a-backlog-in-lanes"
# An article's images at most (a featured image and up to 10 in the article), for the
# whole-article activity's timeout: each image and the post get WORDPRESS_TIMEOUT.
MAX_ARTICLE_IMAGES = 11
WORDPRESS_TIMEOUT = timedelta(minutes=2)
# WordPress calls: a 5xx, a timeout or a 429 is retried with back-off (Retry-After when
# sent); a wrong password, a missing site or a refused request is not: the article fails
# at once with the reason.
PUBLISH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
    non_retryable_error_types=[
        "NoWordPress",
        "auth_error",
        "forbidden",
        "not_found",
        "not_wordpress",
        "redirected",
        "invalid_request",
        "tls_error",
    ],
)


class Poke(Frozen):
    """The site's schedule changed: read the agenda again."""


class PublisherStatus(Frozen):
    site_id: int
    published: int
    failed: int
    next_at: str | None


@workflow.defn
class PublisherWorkflow:
    @workflow.init
    def __init__(self, inp: PublisherInput) -> None:
        self.inp = inp
        self.poked = False
        self.published = inp.published
        self.failed = inp.failed
        self.next_at: str | None = None
        self.publishing = 0  # articles of a backlog in flight

    @workflow.signal
    def poke(self, _: Poke | None = None) -> None:
        self.poked = True

    @workflow.query
    def status(self, _: Poke | None = None) -> PublisherStatus:
        return PublisherStatus(
            site_id=self.inp.site_id,
            published=self.published,
            failed=self.failed,
            next_at=self.next_at,
        )

    @workflow.run
    async def run(self, inp: PublisherInput) -> PublisherStatus:
        for _ in range(ROUNDS_BEFORE_CONTINUE):
            self.poked = False
            agenda = await workflow.execute_activity_method(
                PublishingActivities.publishing_agenda,
                AgendaInput(site_id=inp.site_id, now=workflow.now()),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary="What is due, and the next slot",
            )
            if agenda.due and inp.concurrency > 1 and workflow.patched(PATCH_TOGETHER):
                await self._publish_together(agenda.due, inp)
            else:  # one at a time, as histories before the patch did
                for content_id in agenda.due:
                    await self._publish(content_id)
                    if self._history_full(inp):
                        break
            if self._history_full(inp):
                break  # the rest is still scheduled: the next run's agenda has it
            if agenda.due:
                continue  # publishing took time: look again before sleeping
            self.next_at = agenda.next_at.isoformat() if agenda.next_at else None
            wait = agenda.next_at - workflow.now() if agenda.next_at else IDLE
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self.poked, timeout=max(wait, timedelta(seconds=1))
                )
        workflow.continue_as_new(
            inp.model_copy(update={"published": self.published, "failed": self.failed})
        )

    def _history_full(self, inp: PublisherInput) -> bool:
        """A backlog of due articles (hundreds at once after WordPress was down) would
        grow one history past Temporal's limits: past `history_limit` events the
        publisher continues as new. Histories before this patch never checked."""
        length = workflow.info().get_current_history_length()
        return length >= inp.history_limit and workflow.patched(PATCH_HISTORY_BOUND)

    async def _publish_together(self, due: list[int], inp: PublisherInput) -> None:
        if len(due) > inp.concurrency and workflow.patched(PATCH_LANES):
            await self._publish_lanes(due, inp)
        else:
            await self._publish_each(due, inp)

    async def _publish_lanes(self, due: list[int], inp: PublisherInput) -> None:
        """A backlog in lanes: `concurrency` activities at a time, each publishing up to
        `lane_articles` articles one after another, so a slot never waits a Temporal
        round trip between two articles. Each block of concurrency × lane_articles
        articles is dealt out round-robin (lane k takes the k-th, the k+concurrency-th,
        ...), so articles still go out about in slot order."""
        block = inp.concurrency * max(1, inp.lane_articles)
        lanes = [
            due[start : start + block][k :: inp.concurrency]
            for start in range(0, len(due), block)
            for k in range(inp.concurrency)
        ]
        await self._run_limited(
            [lane for lane in lanes if lane], self._publish_lane, inp.concurrency, inp
        )

    async def _publish_lane(self, content_ids: list[int]) -> None:
        try:
            out = await workflow.execute_activity_method(
                PublishingActivities.publish_lane,
                PublishLaneInput(content_ids=content_ids, now=workflow.now()),
                start_to_close_timeout=WORDPRESS_TIMEOUT
                * (MAX_ARTICLE_IMAGES + 1)
                * len(content_ids),
                heartbeat_timeout=WORDPRESS_TIMEOUT,  # a heartbeat after each image
                retry_policy=PUBLISH_RETRY,
                summary=f"Publish {len(content_ids)} articles, one after another",
            )
        except ActivityError:
            # the lane's retries ran out: each article left gets its own, and its own
            # failure (what the lane published is found published and counted)
            for content_id in content_ids:
                await self._publish_whole(content_id)
            return
        for outcome in out.outcomes:
            if outcome.published is not None:
                self.published += 1
            elif outcome.error is not None:
                self.failed += 1

    async def _publish_each(self, due: list[int], inp: PublisherInput) -> None:
        """A backlog (several articles due at once: a burst of approvals, WordPress back
        after an outage) goes out `inp.concurrency` articles at a time, started in slot
        order: each article's steps still run one after another, and no new one starts
        once the history is full."""
        await self._run_limited(due, self._publish, inp.concurrency, inp)

    async def _run_limited(
        self,
        items: list[Any],
        work: Callable[[Any], Awaitable[None]],
        limit: int,
        inp: PublisherInput,
    ) -> None:
        """`work` over `items`, `limit` at a time, started in order; none starts once the
        history is full (the next run's agenda has the rest)."""

        async def one(item: Any) -> None:
            try:
                await work(item)
            finally:
                self.publishing -= 1

        started = []
        for item in items:
            await workflow.wait_condition(lambda: self.publishing < limit)
            if self._history_full(inp):
                break
            self.publishing += 1
            started.append(asyncio.create_task(one(item)))
        await asyncio.gather(*started)

    async def _publish(self, content_id: int) -> None:
        """One article: claim it, upload its images, make the post, mark it published;
        or, when retries run out, mark it failed with the error."""
        if workflow.patched(PATCH_WHOLE):
            await self._publish_whole(content_id)
            return
        job = await workflow.execute_activity_method(
            PublishingActivities.start_publish,
            ContentRef(content_id=content_id),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Claim article {content_id} for publishing",
        )
        if not job.ready:
            return
        try:
            if workflow.patched(PATCH_ONE_CALL):
                published = await workflow.execute_activity_method(
                    PublishingActivities.publish_article,
                    ContentRef(content_id=content_id),
                    start_to_close_timeout=WORDPRESS_TIMEOUT * (len(job.image_ids) + 1),
                    heartbeat_timeout=WORDPRESS_TIMEOUT,  # a heartbeat after each image
                    retry_policy=PUBLISH_RETRY,
                    summary=f"Upload {len(job.image_ids)} images and create the post of "
                    f"article {content_id}",
                )
            else:  # an activity per image, then the post, as histories before the patch
                published = await self._publish_in_steps(content_id, job.image_ids)
        except ActivityError as err:
            await self._fail(content_id, message(err))
            return
        await workflow.execute_activity_method(
            PublishingActivities.finish_publish,
            published.model_copy(update={"published_at": workflow.now()}),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Article {content_id} is published",
        )
        self.published += 1

    async def _publish_whole(self, content_id: int) -> None:
        """The article in one activity (claim, images, post, published): one Temporal
        round trip, where three cost a backlog a fifth of its rate."""
        try:
            out = await workflow.execute_activity_method(
                PublishingActivities.publish_due,
                PublishDueInput(content_id=content_id, now=workflow.now()),
                start_to_close_timeout=WORDPRESS_TIMEOUT * (MAX_ARTICLE_IMAGES + 1),
                heartbeat_timeout=WORDPRESS_TIMEOUT,  # a heartbeat after each image
                retry_policy=PUBLISH_RETRY,
                summary=f"Publish article {content_id} (images, post, record)",
            )
        except ActivityError as err:
            await self._fail(content_id, message(err))
            return
        if out.published is not None:
            self.published += 1

    async def _fail(self, content_id: int, error: str) -> None:
        self.failed += 1
        await workflow.execute_activity_method(
            PublishingActivities.fail_publish,
            PublishFailure(content_id=content_id, error=error),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Article {content_id} failed to publish",
        )

    async def _publish_in_steps(self, content_id: int, image_ids: list[int]) -> Published:
        for image_id in image_ids:
            await workflow.execute_activity_method(
                PublishingActivities.upload_image,
                ImageRef(content_id=content_id, image_id=image_id),
                start_to_close_timeout=WORDPRESS_TIMEOUT,
                retry_policy=PUBLISH_RETRY,
                summary=f"Upload image {image_id} to WordPress",
            )
        return await workflow.execute_activity_method(
            PublishingActivities.create_post,
            ContentRef(content_id=content_id),
            start_to_close_timeout=WORDPRESS_TIMEOUT,
            retry_policy=PUBLISH_RETRY,
            summary=f"Create the WordPress post of article {content_id}",
        )
