"""Benchmark: publishing to a real WordPress, igny8's publisher workflow against a bare loop
of the same REST calls, measured in the same run.

    .venv/bin/python bench/publish.py [--db postgres|sqlite] [--articles 200] [--images 3]
        [--image-size 512] [--workers 2]

Method
  A throwaway WordPress 6.1 (cli/wordpress.py: Debian's tree, PHP's built-in server, a
  fresh MariaDB database, dropped at the end), a Temporal dev server and `--workers`
  worker processes as `igny8 up` runs them. Three sites of one account with the same
  number of approved articles, each with `--images` stored PNGs (a featured image and
  the rest in the article), the same html, distinct slugs.

  Bare loop (baseline): for each article of the first site, in this process, through
  providers/wordpress.py's client: upload each image (with its alt text and title),
  then create the post with the in-article images' URLs in its html, the featured media,
  the slug and the excerpt; as many articles at a time as the publisher workflow takes
  from a backlog (PublisherInput.concurrency, 4), each article's calls in order. No
  database, no retries, no idempotency.

  igny8: the second site's articles are all due (scheduled a second ago); the site's
  PublisherWorkflow is poked (signal-with-start, as the API does) and publishes them:
  claim, upload each image, create the post, mark published with a notification, each
  an activity with its timeouts and retries, the post and media ids stored as they come
  back. Wall time runs from the poke to the last article marked published in the
  database (polled every 50 ms).

  Both print articles per minute; ratio = igny8's rate / the bare loop's rate (goal at
  least 0.8). WordPress slows as its tables and its upload folder fill (each upload
  looks through the month's folder for a free file name), so the bare loop runs twice,
  once before igny8 and once after, each on its own site's articles, and the baseline
  is the mean of the two rates: the drift counts neither for igny8 nor against it.

Writes bench/results/publish-<db>.json and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, func, select  # noqa: E402
from sqlmodel import Session  # noqa: E402

from activities.publishing import (  # noqa: E402
    PublisherInput,
    poke_publisher,
    publisher_id,
    with_images,
)
from bench.automation import cancellable, free_port, running_stack  # noqa: E402
from cli.wordpress import (  # noqa: E402
    DatabaseConfig,
    WordPressInstance,
    drop_wordpress_database,
    start_wordpress,
    wordpress_available,
)
from core.settings import get_settings  # noqa: E402
from domain.secrets import encrypt  # noqa: E402
from models import Content, Image  # noqa: E402
from models.db import utcnow  # noqa: E402
from models.runs import WordPressIntegration  # noqa: E402
from providers.media_store import LocalMediaStore, image_key  # noqa: E402
from providers.wordpress import WordPressClient  # noqa: E402
from simulator.png import draw_png  # noqa: E402
from tests import builders  # noqa: E402

HTML = "".join(
    f"<h2>Section {n}</h2><p>{'Paragraph text about brewing coffee well. ' * 12}</p>"
    for n in range(1, 5)
)
GOAL = 0.8


def seed_site(
    engine: Engine, acct: int, media: Path, wp: WordPressInstance, opts: argparse.Namespace
) -> tuple[int, list[int]]:
    """A site connected to `wp` with `--articles` approved articles and their images."""
    site = builders.site(engine, acct, name=f"bench-{uuid.uuid4().hex[:6]}")
    store = LocalMediaStore(media)
    secret = get_settings().secret_key.get_secret_value()
    ids = []
    with Session(engine, expire_on_commit=False) as session:
        session.add(
            WordPressIntegration(
                account_id=acct,
                site_id=site.id,
                base_url=wp.base_url,
                username=wp.username,
                password_encrypted=encrypt(wp.app_password, secret),
            )
        )
        session.commit()
    for n in range(opts.articles):
        title = f"Coffee guide {n} of site {site.id}"
        task, row = builders.task_with_content(engine, acct, site.id, title)
        with Session(engine, expire_on_commit=False) as session:
            c = session.get(Content, row.id)
            assert c is not None
            c.sqlmodel_update(
                {
                    "html": HTML,
                    "status": "approved",
                    "slug": f"coffee-guide-{n}-{site.id}-{uuid.uuid4().hex[:6]}",
                    "meta_description": f"All about coffee, part {n}.",
                }
            )
            session.add(c)
            for position in range(opts.images):
                kind = "featured" if position == 0 else "in_article"
                image = Image(
                    account_id=acct,
                    site_id=site.id,
                    task_id=task.id,
                    content_id=c.id,
                    image_type=kind,
                    position=position,
                    status="generated",
                    alt_text=f"{kind} image {position} of {title}",
                    mime_type="image/png",
                )
                session.add(image)
                session.flush()
                key = image_key(acct, image.id, "image/png")
                png = draw_png(f"{title} {position}", opts.image_size, opts.image_size)
                store.put(key, png, "image/png")
                image.file_path = key
            session.commit()
            ids.append(c.id)
    return site.id, ids


def articles_of(engine: Engine, ids: list[int]) -> list[tuple[Any, list[Any]]]:
    """Each article with its images, featured first."""
    out = []
    with engine.connect() as conn:
        for cid in ids:
            article = conn.execute(select(Content.__table__).where(Content.id == cid)).one()
            images = conn.execute(
                select(Image.__table__).where(Image.content_id == cid).order_by(Image.position)
            ).all()
            out.append((article, images))
    return out


async def bare_loop(
    wp: WordPressInstance,
    store: LocalMediaStore,
    articles: list[tuple[Any, list[Any]]],
    concurrency: int,
) -> float:
    """The same REST calls, `concurrency` articles at a time (the publisher's own), each
    article's images one after another, then its post; seconds taken."""
    queue: asyncio.Queue[tuple[Any, list[Any]]] = asyncio.Queue()
    for item in articles:
        queue.put_nowait(item)

    async def publisher(client: WordPressClient) -> None:
        while not queue.empty():
            article, images = queue.get_nowait()
            await publish_one(client, store, article, images)

    started = time.perf_counter()
    async with WordPressClient(wp.base_url, wp.username, wp.app_password) as client:
        await asyncio.gather(*(publisher(client) for _ in range(concurrency)))
    return time.perf_counter() - started


async def publish_one(
    client: WordPressClient, store: LocalMediaStore, article: Any, images: list[Any]
) -> None:
    uploaded = []
    for image in images:
        title = f"bare-{image.id}-{uuid.uuid4().hex[:6]}"
        media = await client.upload_media(
            store.get(image.file_path), f"{title}.png", "image/png", image.alt_text, title
        )
        uploaded.append(
            SimpleNamespace(
                id=media.id,
                external_url=media.source_url,
                alt_text=image.alt_text,
                image_type=image.image_type,
            )
        )
    await client.create_post(
        title=article.title,
        content=with_images(article.html, [u for u in uploaded if u.image_type != "featured"]),
        slug=article.slug,
        excerpt=article.meta_description,
        featured_media=uploaded[0].id if uploaded else None,
    )


def published_count(engine: Engine, ids: list[int]) -> tuple[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Content.site_status, func.count())
            .where(Content.id.in_(ids))
            .group_by(Content.site_status)
        ).all()
    counts = dict(rows)
    return counts.get("published", 0), counts.get("failed", 0)


async def igny8_publish(stack: Any, acct: int, site_id: int, ids: list[int]) -> float:
    """All due, one poke, until every article is published; seconds taken."""
    with stack.engine.begin() as conn:
        conn.execute(
            Content.__table__.update()
            .where(Content.id.in_(ids))
            .values(site_status="scheduled", scheduled_publish_at=utcnow() - timedelta(seconds=1))
        )
    started = time.perf_counter()
    await poke_publisher(stack.client, stack.task_queue, acct, site_id)
    while True:
        done, failed = published_count(stack.engine, ids)
        if failed:
            raise RuntimeError(f"{failed} articles failed to publish (see the worker logs)")
        if done == len(ids):
            return time.perf_counter() - started
        await asyncio.sleep(0.05)


def wordpress_counts(wp: WordPressInstance) -> dict[str, int]:
    """Posts and media items WordPress holds (the X-WP-Total headers)."""
    import httpx

    auth = (wp.username, wp.app_password)
    out = {}
    for kind in ("posts", "media"):
        resp = httpx.get(
            f"{wp.base_url}/wp-json/wp/v2/{kind}",
            params={"per_page": 1, "status": "any" if kind == "posts" else "inherit"},
            auth=auth,
            timeout=30,
        )
        resp.raise_for_status()
        out[kind] = int(resp.headers["X-WP-Total"])
    return out


async def measure(opts: argparse.Namespace) -> dict[str, Any]:
    reason = wordpress_available()
    if reason:
        raise SystemExit(f"no real WordPress here: {reason} (run deploy/wordpress/setup.sh)")
    db_name = f"igny8_bench_{uuid.uuid4().hex[:8]}"
    async with running_stack(opts.db, opts.workers, 0.0, 0.0, 0, name="publish") as stack:
        wp = start_wordpress(stack.tmp / "wordpress", free_port(), db_name)
        try:
            return await _measure(stack, wp, opts)
        finally:
            wp.stop()
            drop_wordpress_database(DatabaseConfig(db_name))


async def _measure(stack: Any, wp: WordPressInstance, opts: argparse.Namespace) -> dict[str, Any]:
    media = stack.tmp / "media"
    acct, _ = builders.account(stack.engine, credits=10, name="bench-publish")
    t0 = time.perf_counter()
    _, bare_ids = seed_site(stack.engine, acct, media, wp, opts)
    ours_site, ours_ids = seed_site(stack.engine, acct, media, wp, opts)
    _, after_ids = seed_site(stack.engine, acct, media, wp, opts)
    print(f"[{opts.db}] seeded 3 × {opts.articles} articles in {time.perf_counter() - t0:.1f} s")
    store = LocalMediaStore(media)
    before = wordpress_counts(wp)  # a fresh WordPress has its "Hello world!" post
    concurrency = PublisherInput(account_id=acct, site_id=ours_site).concurrency
    bare_s = await bare_loop(wp, store, articles_of(stack.engine, bare_ids), concurrency)
    print(f"[{opts.db}] bare loop (before): {opts.articles} articles in {bare_s:.1f} s")
    ours_s = await igny8_publish(stack, acct, ours_site, ours_ids)
    print(f"[{opts.db}] igny8: {opts.articles} articles in {ours_s:.1f} s")
    await stack.client.get_workflow_handle(publisher_id(acct, ours_site)).terminate("bench over")
    bare_after_s = await bare_loop(wp, store, articles_of(stack.engine, after_ids), concurrency)
    print(f"[{opts.db}] bare loop (after): {opts.articles} articles in {bare_after_s:.1f} s")
    after = wordpress_counts(wp)
    counts = {kind: after[kind] - before[kind] for kind in after}
    expected = {"posts": 3 * opts.articles, "media": 3 * opts.articles * opts.images}
    # the baseline is the mean of the loops before and after: WordPress slows as its
    # tables and upload folder fill, and igny8 ran between the two
    bare_rate = (opts.articles / bare_s + opts.articles / bare_after_s) / 2 * 60
    ours_rate = opts.articles / ours_s * 60
    return {
        "db": opts.db,
        "worker_processes": opts.workers,
        "concurrency": concurrency,
        "articles": opts.articles,
        "images_per_article": opts.images,
        "image_size_px": opts.image_size,
        "bare_loop_s": round(bare_s, 2),
        "bare_loop_after_s": round(bare_after_s, 2),
        "igny8_s": round(ours_s, 2),
        "bare_loop_articles_per_min": round(bare_rate, 1),
        "igny8_articles_per_min": round(ours_rate, 1),
        "ratio": round(ours_rate / bare_rate, 3),
        "goal": GOAL,
        "new_wordpress_posts": counts["posts"],
        "new_wordpress_media": counts["media"],
        "exactly_one_each": counts == expected,
    }


def summary(r: dict[str, Any]) -> list[str]:
    tag = f"[{r['db']}]"
    return [
        f"{tag} {r['articles']} articles × {r['images_per_article']} images "
        f"({r['image_size_px']} px PNG) to a real WordPress, {r['concurrency']} articles at a "
        "time (the publisher's concurrency), each article's calls in order",
        f"{tag} bare loop of the REST calls: {r['bare_loop_s']} s before igny8, "
        f"{r['bare_loop_after_s']} s after; mean rate {r['bare_loop_articles_per_min']} "
        "articles/min",
        f"{tag} igny8 publisher workflow ({r['worker_processes']} workers): {r['igny8_s']} s = "
        f"{r['igny8_articles_per_min']} articles/min",
        f"{tag} ratio {r['ratio']} (goal >= {r['goal']}); WordPress gained "
        f"{r['new_wordpress_posts']} posts and {r['new_wordpress_media']} media items (one per "
        f"article and per image: {r['exactly_one_each']})",
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--db", choices=["postgres", "sqlite"], default="postgres")
    add("--articles", type=int, default=200, help="articles per side")
    add("--images", type=int, default=3, help="images per article (the first is featured)")
    add("--image-size", type=int, default=512, help="PNG width and height in pixels")
    add("--workers", type=int, default=2, help="worker processes, as `igny8 up` runs them")
    return parser.parse_args()


def main() -> None:
    opts = parse_args()
    try:
        results = asyncio.run(cancellable(measure(opts)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: child processes stopped, temporary databases removed")
        raise SystemExit(130) from None
    out = ROOT / "bench" / "results" / f"publish-{opts.db}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for line in summary(results):
        print(line)
    print(f"[{opts.db}] written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
