"""The demo's last leg: the demo site's approved articles published to a local WordPress.

`make run` (and `make demo`) end where a user's first day would: articles on a blog. A
real WordPress is started when this machine can run one (`deploy/wordpress/setup.sh` has
installed PHP and Debian's tree, and MariaDB answers); otherwise the fake WordPress that
the tests use, in this process, so the demo still shows the whole path. Either way the
demo goes through the same API a user would: the site's WordPress connection is saved
and tested, the articles are approved and scheduled a minute apart (the slot rules
refuse two posts within a minute), and the site's publisher workflow publishes each at
its slot. Nothing here writes to the database directly.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from cli.progress import api_call, raise_for_answer
from core.settings import Settings

FIRST_SLOT_IN_S = 10.0
SLOT_GAP_S = 61.0  # the slot rules refuse two posts of a site within a minute
SLOT_TRIES = 5
DEMO_DAY_MAX = 24  # the most a site may publish in a day: demo runs add up
FINAL = ("published", "failed")


def demo_wordpress_db(data_dir: Path) -> str:
    """The demo WordPress's MariaDB database: one per data folder, as its files are, so
    two checkouts (or a test beside a developer's `make run`) never share one."""
    digest = hashlib.sha1(str(Path(data_dir).resolve()).encode()).hexdigest()[:10]
    return f"igny8_demo_{digest}"


@dataclass
class DemoWordPress:
    """A running WordPress the demo publishes to, and how to stop it."""

    kind: str
    url: str
    username: str
    app_password: str = field(repr=False)
    stop: Callable[[], None] = field(repr=False)


def start_demo_wordpress(settings: Settings, say: Callable[[str], None]) -> DemoWordPress:
    """The real WordPress when it can run here, else the fake (and say why)."""
    from cli.wordpress import WordPressStartError, start_wordpress, wordpress_available

    reason = wordpress_available()
    if reason is None:
        try:
            wp = start_wordpress(
                settings.data_dir / "wordpress",
                settings.demo_wordpress_port,
                demo_wordpress_db(settings.data_dir),
            )
        except WordPressStartError as exc:
            reason = str(exc)
        else:
            return DemoWordPress("WordPress", wp.base_url, wp.username, wp.app_password, wp.stop)
    from simulator.fake_wordpress import FakeWordPress

    say(f"no real WordPress here ({reason}): publishing to the fake WordPress instead")
    fake = FakeWordPress().start()
    return DemoWordPress(
        "the fake WordPress", fake.url, fake.state.username, fake.state.app_password, fake.stop
    )


@dataclass
class DemoPublishing:
    """The articles the demo scheduled, and which of them have been reported."""

    site_id: int
    content_ids: list[int]
    reported: set[int] = field(default_factory=set)

    def newly_final(self, client: httpx.Client) -> list[dict[str, Any]]:
        """Scheduled articles that were published (or failed) since the last look."""
        found = []
        for content_id in self.content_ids:
            if content_id in self.reported:
                continue
            item = api_call(client, "GET", f"/api/v1/content/{content_id}")
            if item["site_status"] in FINAL:
                self.reported.add(content_id)
                found.append(item)
        return found

    @property
    def finished(self) -> bool:
        return len(self.reported) == len(self.content_ids)


def connect_site(client: httpx.Client, site_id: int, wp: DemoWordPress) -> str:
    """Save the site's WordPress connection and test it; the test's message."""
    base = f"/api/v1/sites/{site_id}/integrations/wordpress"
    body = {"base_url": wp.url, "username": wp.username, "application_password": wp.app_password}
    api_call(client, "PUT", base, json=body)
    result = api_call(client, "POST", f"{base}/test")
    if not result["ok"]:
        raise RuntimeError(f"the demo WordPress at {wp.url} failed its test: {result['message']}")
    return str(result["message"])


def schedule_articles(
    client: httpx.Client, site_id: int, count: int, now: datetime | None = None
) -> DemoPublishing:
    """Approve up to `count` of the site's newest articles awaiting review (or approved,
    not yet scheduled) and schedule them a minute apart from a few seconds from now. A
    slot taken by an earlier demo's article (409) moves on to the next; an article that
    finds no free slot (the day is full) stays approved, unscheduled."""
    ready = _ready_articles(client, site_id, count)
    if ready:
        api_call(
            client, "PATCH", f"/api/v1/sites/{site_id}", json={"max_posts_per_day": DEMO_DAY_MAX}
        )
    at = (now or datetime.now(UTC)) + timedelta(seconds=FIRST_SLOT_IN_S)
    scheduled = []
    for item in ready:
        if item["status"] == "review":
            api_call(client, "POST", f"/api/v1/content/{item['id']}/approve")
        for _ in range(SLOT_TRIES):
            path = f"/api/v1/content/{item['id']}/schedule"
            resp = client.post(path, json={"at": at.isoformat()})
            at += timedelta(seconds=SLOT_GAP_S)
            if resp.status_code != 409:
                raise_for_answer(resp)
                scheduled.append(item["id"])
                break
    return DemoPublishing(site_id, scheduled)


def _ready_articles(client: httpx.Client, site_id: int, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for status in ("review", "approved"):
        page = api_call(
            client,
            "GET",
            f"/api/v1/sites/{site_id}/content",
            params={"status": status, "site_status": "not_published", "limit": count},
        )
        found.extend(page["data"])
    found.sort(key=lambda item: item["id"], reverse=True)
    return found[:count]


def wait_published(
    client: httpx.Client,
    publishing: DemoPublishing,
    on_final: Callable[[dict[str, Any]], None],
    timeout_s: float,
    poll_s: float = 1.0,
) -> bool:
    """Report each article as it is published or fails, until all are or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not publishing.finished and time.monotonic() < deadline:
        for item in publishing.newly_final(client):
            on_final(item)
        if not publishing.finished:
            time.sleep(poll_s)
    return publishing.finished


def calendar_week(client: httpx.Client, site_id: int) -> list[dict[str, Any]]:
    """The site's calendar items from yesterday to a week ahead (its own timezone)."""
    today = datetime.now(UTC).date()
    params = {
        "start": (today - timedelta(days=1)).isoformat(),
        "end": (today + timedelta(days=7)).isoformat(),
    }
    return list(
        api_call(client, "GET", f"/api/v1/sites/{site_id}/calendar", params=params)["items"]
    )
