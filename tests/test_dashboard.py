"""The web dashboard in a real headless Chromium (issue 9; the seed plan's issues 3-7 and 9).

One stack (API on uvicorn, worker, Temporal dev server, simulator, SQLite) and one browser
for the whole module; tests run in file order and build on each other's data (the first
run's articles feed the review, widget and image-batch tests). Each page records console
errors and warnings, uncaught errors, failed requests and unexpected HTTP errors, and every
test fails on any of them (`Guard`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from sqlalchemy import select, text, update
from sqlmodel import Session
from temporalio.client import WorkflowExecutionStatus

from models import Content, Sector
from tests import builders
from tests.browser_fixtures import DESKTOP, PHONE, Guard, Stack, chromium, running_stack
from tests.fake_wordpress import DEFAULT_APP_PASSWORD, DEFAULT_USER, FakeWordPress
from tests.sim_fixture import KEYWORDS
from workflows.automation_run import AutomationRunWorkflow

pytestmark = [pytest.mark.temporal, pytest.mark.timeout(120)]
TZ = "America/New_York"
CAL_MONTH = "2026-03"  # New York moves to summer time on 8 March
# (title, local publish time): the first is 23:30 on 7 March in New York, 8 March in UTC
PUBLISHED = [
    ("Espresso at Home", datetime(2026, 3, 7, 23, 30)),
    ("The Best Burr Grinders", datetime(2026, 3, 12, 9, 0)),
    ("Cold Brew Ratios", datetime(2026, 3, 31, 22, 15)),
]
PAGES = ["/automation", "/images", "/content", "/calendar", "/settings", "/credits"]
FINAL = ("completed", "cancelled", "failed")


@dataclass
class World:
    stack: Stack
    browser: Any
    account: int
    key: str
    site_id: int
    other_key: str
    other_site_id: int
    other_content_id: int
    state: dict[str, Any]

    @property
    def url(self) -> str:
        return self.stack.url


def seed(stack: Stack) -> dict[str, Any]:
    engine = stack.engine
    builders.billing_config(engine, "0.01")
    text_model = builders.text_model_config(engine, max_concurrency=8)
    image = builders.model_config(engine, model_name="img", credits_per_image=2, max_concurrency=2)
    acct, key = builders.account(engine, credits=20_000, name="Coffee Co")
    site = builders.site(
        engine,
        acct,
        name="Coffee Blog",
        timezone=TZ,
        max_in_article_images=1,
        text_model=text_model.model_name,
        image_model=image.model_name,
    )
    with Session(engine) as session:
        session.add(Sector(account_id=acct, site_id=site.id, name="Espresso"))
        session.commit()
    builders.keywords(engine, acct, site.id, KEYWORDS[:5])
    tz = ZoneInfo(TZ)
    for title, local in PUBLISHED:
        _task, content = builders.task_with_content(engine, acct, site.id, title)
        slug = title.lower().replace(" ", "-")
        with engine.begin() as conn:
            conn.execute(
                update(Content.__table__)
                .where(Content.__table__.c.id == content.id)
                .values(
                    status="approved",
                    site_status="published",
                    published_at=local.replace(tzinfo=tz),
                    external_id=str(content.id),
                    external_url=f"https://coffee.example/{slug}/",
                    meta_title=title,
                    meta_description=f"All about {title.lower()}.",
                )
            )
    other, other_key = builders.account(engine, credits=100, name="Rival")
    other_site = builders.site(engine, other, name="Rival Site")
    _t, secret = builders.task_with_content(engine, other, other_site.id, "Rival Secret Article")
    return {
        "account": acct,
        "key": key,
        "site_id": site.id,
        "other_key": other_key,
        "other_site_id": other_site.id,
        "other_content_id": secret.id,
    }


@pytest_asyncio.fixture(scope="module")
async def world(temporal_env, simulator, tmp_path_factory) -> AsyncIterator[World]:
    async with chromium() as browser:
        tmp = tmp_path_factory.mktemp("dashboard")
        async with running_stack(temporal_env.client, simulator, tmp) as stack:
            yield World(stack, browser, state={}, **seed(stack))


async def open_page(world: World, key: str | None = None, viewport: dict | None = None):
    """A fresh browser context (its own cookies), signed in with `key` (default: the
    seeded account's), and its page's Guard."""
    context = await world.browser.new_context(viewport=viewport or DESKTOP, base_url=world.url)
    page = await context.new_page()
    guard = Guard()
    guard.watch(page)
    await page.goto("/login")
    await page.fill("#api_key", key or world.key)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r"/(automation)?$"))
    return context, page, guard


async def recorder(page: Any, selector: str, name: str) -> None:
    """Record every text `selector` shows from now on into window[name] (as the DOM
    changes, so short in-between states like "Pausing…" are caught too)."""
    await page.evaluate(
        """([selector, name]) => {
            const el = document.querySelector(selector);
            window[name] = [el.textContent.trim()];
            new MutationObserver(() => {
                const t = el.textContent.trim();
                if (window[name][window[name].length - 1] !== t) window[name].push(t);
            }).observe(el, {childList: true, characterData: true, subtree: true,
                            attributes: true});
        }""",
        [selector, name],
    )


async def wait_status(page: Any, *statuses: str, timeout_s: float = 90) -> str:
    """Wait for the panel to show one of `statuses` (the workflow's, from SSE/polling)."""
    cond = " || ".join(f"p.dataset.status === '{s}'" for s in statuses)
    await page.wait_for_function(
        f"() => {{ const p = document.querySelector('.panel[data-kind]'); return p && ({cond}); }}",
        timeout=timeout_s * 1000,
    )
    return await page.get_attribute(".panel[data-kind]", "data-status")


async def record_working(page: Any) -> None:
    """Record every line the panel shows about the items being worked on (under each
    stage, and the "now" line) into window.working[stage or "now"]."""
    await page.evaluate(
        """() => {
            const panel = document.querySelector('.panel[data-kind]');
            window.working = {};
            const keep = (key, t) => {
                const seen = window.working[key] = window.working[key] || [];
                if (t && !seen.includes(t)) seen.push(t);
            };
            const look = () => {
                panel.querySelectorAll('[data-stage]').forEach((row) => {
                    const items = row.querySelector('.stage-items');
                    if (items && !items.hidden) keep(row.dataset.stage, items.textContent.trim());
                });
                keep('now', panel.querySelector('[data-field=now]').textContent.trim());
            };
            look();
            new MutationObserver(look).observe(panel, {childList: true, characterData: true,
                                                       subtree: true, attributes: true});
        }"""
    )


async def run_progress(world: World, run_id: str):
    handle = world.stack.client.get_workflow_handle_for(AutomationRunWorkflow.run, run_id)
    return await handle.query(AutomationRunWorkflow.progress)


def sql_counts(world: World) -> dict[str, int]:
    """The widget's numbers, counted here in plain SQL."""
    site = world.site_id
    queries = {
        "keywords.total": "SELECT COUNT(*) FROM igny8_keywords WHERE site_id = :s",
        "keywords.clustered": "SELECT COUNT(*) FROM igny8_keywords "
        "WHERE site_id = :s AND cluster_id IS NOT NULL",
        "clusters.total": "SELECT COUNT(*) FROM igny8_clusters WHERE site_id = :s",
        "ideas.total": "SELECT COUNT(*) FROM igny8_content_ideas WHERE site_id = :s",
        "tasks.total": "SELECT COUNT(*) FROM igny8_tasks WHERE site_id = :s",
        "content.total": "SELECT COUNT(*) FROM igny8_content WHERE site_id = :s",
        "content.review": "SELECT COUNT(*) FROM igny8_content "
        "WHERE site_id = :s AND status = 'review'",
        "content.published": "SELECT COUNT(*) FROM igny8_content "
        "WHERE site_id = :s AND site_status = 'published'",
        "content.scheduled": "SELECT COUNT(*) FROM igny8_content "
        "WHERE site_id = :s AND site_status = 'scheduled'",
        "images.total": "SELECT COUNT(*) FROM igny8_images WHERE site_id = :s",
        "images.generated": "SELECT COUNT(*) FROM igny8_images "
        "WHERE site_id = :s AND status = 'generated'",
    }
    with world.stack.engine.connect() as conn:
        return {k: conn.execute(text(q), {"s": site}).scalar_one() for k, q in queries.items()}


async def widget(page: Any) -> dict[str, str]:
    return await page.evaluate(
        """() => Object.fromEntries(Array.from(document.querySelectorAll('[data-stat]'))
             .map(e => [e.dataset.stat, e.textContent.trim()]))"""
    )


# ---- the tests, in order ------------------------------------------------------------------
async def test_sign_in_the_branded_404_and_json_404_for_the_api(world: World):
    context = await world.browser.new_context(viewport=DESKTOP, base_url=world.url)
    page = await context.new_page()
    guard = Guard()
    guard.watch(page)
    try:
        await page.goto("/settings")
        assert page.url.endswith("/login?next=%2Fsettings")
        guard.expect(401, "/login")
        await page.fill("#api_key", "igny8_not-a-key")
        await page.click("button[type=submit]")
        await page.wait_for_selector(".alert-danger")
        await page.fill("#api_key", world.key)
        await page.click("button[type=submit]")
        await page.wait_for_url("**/settings")
        cookie = next(c for c in await context.cookies() if c["name"] == "igny8_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        assert world.key not in cookie["value"]
        # an unknown dashboard path: the branded page, with Go back, Home and support
        guard.expect(404, "/no/such/page")
        resp = await page.goto("/no/such/page")
        assert resp.status == 404 and "text/html" in resp.headers["content-type"]
        assert await page.inner_text("h1") == "Page not found"
        assert await page.is_visible("[data-go-back]")
        assert await page.get_attribute("a.btn-brand", "href") == "/"
        assert (await page.get_attribute(".help a", "href")).startswith("mailto:")
        await page.click("[data-go-back]")
        await page.wait_for_url("**/settings")
        # an API path keeps answering JSON, signed in or not
        guard.expect(404, "/api/v1/no/such/route")
        api = await page.goto("/api/v1/no/such/route")
        assert api.status == 404 and api.headers["content-type"] == "application/json"
        assert await api.json() == {"detail": "Not Found"}
        # the JSON API accepts the session for reads, and refuses writes without the token
        balance = await page.request.get("/api/v1/credits/balance")
        assert balance.status == 200 and (await balance.json())["credits"] == 20_000
        forged = await page.request.post(f"/api/v1/content/{world.other_content_id}/approve")
        assert forged.status == 403
        guard.assert_clean()
    finally:
        await context.close()


async def test_a_run_started_from_the_dashboard_shows_the_balance_falling_image_by_image(
    world: World,
):
    # text calls slow enough that each stage's items are in flight across several SSE ticks
    world.stack.sim.configure(latency_s=0.6, images_latency_s=0.25)
    context, page, guard = await open_page(world)
    try:
        await page.goto("/automation")
        await page.click("#start-run button[type=submit]")
        await page.wait_for_url("**/automation/runs/**")
        run_id = await page.get_attribute("#run-panel", "data-id")
        world.state["run_id"] = run_id
        await record_working(page)
        await page.evaluate(
            """() => {  // each balance shown, with the images stage's status at that moment
                const el = document.querySelector('#live-balance');
                const stage = () => (document.querySelector('[data-stage=images] .fill') || {}).className || '';
                window.seen = [[el.textContent.trim(), stage()]];
                new MutationObserver(() => {
                    const last = window.seen[window.seen.length - 1];
                    if (last[0] !== el.textContent.trim()) window.seen.push([el.textContent.trim(), stage()]);
                }).observe(el, {childList: true, characterData: true, subtree: true});
            }"""
        )
        assert await wait_status(page, *FINAL) == "completed"
        seen = [(int(b), status) for b, status in await page.evaluate("window.seen")]
        balances = [b for b, _ in seen]
        assert balances == sorted(balances, reverse=True), balances  # only ever falls
        assert builders.balance(world.stack.engine, world.account) == balances[-1]
        # the item being processed, by its title, under its stage and in the "now" line
        working = await page.evaluate("window.working")
        with world.stack.engine.connect() as conn:
            site = {"s": world.site_id}
            keywords = conn.execute(
                text("SELECT keyword FROM igny8_keywords WHERE site_id = :s"), site
            ).scalars()
            tasks = conn.execute(
                text("SELECT title FROM igny8_tasks WHERE site_id = :s AND idea_id IS NOT NULL"),
                site,
            ).scalars()
            titles = {"clustering": set(keywords), "content": set(tasks)}
        for stage, verb in (("clustering", "Clustering “"), ("content", "Writing “")):
            named = {t for t in re.findall(r"“([^”]+)”", " ".join(working.get(stage, [])))}
            assert named and named <= titles[stage], (stage, working)
            assert any(line.startswith(verb) for line in working[stage]), working
        assert any(" · Writing “" in line for line in working["now"]), working["now"]
        assert any(line.startswith("Illustrating “") for line in working.get("images", []))
        # image by image: it fell several times while the images stage ran, not once at the end
        during_images = [b for b, status in seen if status.endswith("stage-running")]
        assert len(during_images) >= 3, seen
        final = await run_progress(world, run_id)
        assert final.status == "completed"
        assert await page.inner_text("#live-balance") == str(final.balance or balances[-1])
        # the Temporal UI link and the run in the history
        link = await page.get_attribute("#temporal-link", "href")
        assert link.endswith(f"/namespaces/default/workflows/{run_id}")
        await page.goto("/automation")
        assert await page.locator(f"a[href='/automation/runs/{run_id}']").count() == 1
        guard.assert_clean()
    finally:
        await context.close()


async def test_pause_resume_and_cancel_buttons_follow_the_workflow(world: World):
    builders.keywords(
        world.stack.engine, world.account, world.site_id, [*KEYWORDS[5:], "coffee scales"]
    )
    world.stack.sim.configure(latency_s=0.4)
    context, page, guard = await open_page(world)
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    try:
        await page.goto("/automation")
        await page.click("#start-run button[type=submit]")
        await page.wait_for_url("**/automation/runs/**")
        run_id = await page.get_attribute("#run-panel", "data-id")
        pause = page.locator("[data-action=pause]")
        resume = page.locator("[data-action=resume]")
        cancel = page.locator("[data-action=cancel]")
        await pause.wait_for(state="visible")
        colours = {
            name: await loc.evaluate("b => getComputedStyle(b).backgroundColor")
            for name, loc in (("pause", pause), ("cancel", cancel))
        }
        assert colours == {"pause": "rgb(245, 158, 11)", "cancel": "rgb(185, 28, 28)"}, colours
        await recorder(page, "[data-action=pause]", "pauseTexts")
        await recorder(page, "[data-action=cancel]", "cancelTexts")

        await pause.click()
        await wait_status(page, "paused")
        assert (await run_progress(world, run_id)).status == "paused"
        assert "Pausing…" in await page.evaluate("window.pauseTexts")
        await resume.wait_for(state="visible")
        assert await pause.is_hidden()
        assert (
            await resume.evaluate("b => getComputedStyle(b).backgroundColor")
        ) == "rgb(21, 128, 61)"

        await resume.click()
        await wait_status(page, "running")
        assert (await run_progress(world, run_id)).status == "running"
        await pause.wait_for(state="visible")

        await cancel.click()  # confirmed in the dialog
        assert await wait_status(page, *FINAL) == "cancelled"
        assert "Cancelling…" in await page.evaluate("window.cancelTexts")
        handle = world.stack.client.get_workflow_handle_for(AutomationRunWorkflow.run, run_id)
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.COMPLETED
        assert (await handle.result()).status == "cancelled"
        assert await cancel.is_hidden() and await pause.is_hidden()
        guard.assert_clean()
    finally:
        await context.close()
        world.stack.sim.configure(latency_s=0.0)


async def test_the_calendar_and_the_list_show_the_same_published_items(world: World):
    context, page, guard = await open_page(world)
    try:

        async def published(selector: str) -> list[tuple[str, str]]:
            chips = page.locator(f"{selector} [data-site-status=published] a")
            return sorted(
                [(await c.inner_text(), await c.get_attribute("href")) for c in await chips.all()]
            )

        await page.goto(f"/calendar?month={CAL_MONTH}")
        grid = await published("#calendar-grid")
        await page.click("#view-list")
        await page.wait_for_selector("#calendar-list")
        listed = await published("#calendar-list")
        expected = sorted(
            (t, f"https://coffee.example/{t.lower().replace(' ', '-')}/") for t, _ in PUBLISHED
        )
        assert grid == listed == expected
        # the site's days: 23:30 on 7 March in New York is the 8th in UTC, shown on the 7th
        await page.click("#view-grid")
        day = page.locator("[data-day='2026-03-07']")
        assert "Espresso at Home" in await day.inner_text()
        assert "Cold Brew Ratios" in await page.locator("[data-day='2026-03-31']").inner_text()
        guard.assert_clean()
    finally:
        await context.close()


async def test_the_widget_shows_the_same_site_wide_counts_on_every_page_as_sql(world: World):
    context, page, guard = await open_page(world)
    try:
        expected = {k: str(v) for k, v in sql_counts(world).items()}
        assert int(expected["content.total"]) > len(PUBLISHED)  # the runs wrote articles
        seen = {}
        for path in PAGES:
            await page.goto(path)
            counts = await widget(page)
            seen[path] = {k: counts[k] for k in expected}
        assert all(counts == expected for counts in seen.values()), (expected, seen)
        # a sector only when the user picks one, and only on that page
        espresso = await page.locator("#sector-select option", has_text="Espresso").get_attribute(
            "value"
        )
        await page.select_option("#sector-select", espresso)
        await page.wait_for_url(f"**sector={espresso}")
        assert (await widget(page))["keywords.total"] == "0"
        await page.goto("/content")
        assert {k: v for k, v in (await widget(page)).items() if k in expected} == expected
        guard.assert_clean()
    finally:
        await context.close()


async def test_the_review_queue_approves_rejects_and_schedules(world: World):
    context, page, guard = await open_page(world)
    try:
        await page.goto("/content?status=review")
        with world.stack.engine.connect() as conn:  # one with its images, and another
            first, second = conn.execute(
                text(
                    "SELECT c.id FROM igny8_content c WHERE c.site_id = :s AND c.status = 'review'"
                    " ORDER BY (SELECT COUNT(*) FROM igny8_images i WHERE i.content_id = c.id"
                    " AND i.status = 'generated') DESC, c.id LIMIT 2"
                ),
                {"s": world.site_id},
            ).scalars()
        assert await page.locator(f".queue-item[data-content-id='{second}']").count() == 1
        # the preview: images, meta title and description
        await page.click(f".queue-item[data-content-id='{first}'] .queue-title")
        await page.wait_for_url(f"**/content/{first}")
        assert (await page.inner_text("[data-field=meta_title]")).strip() not in ("", "—")
        assert (await page.inner_text("[data-field=meta_description]")).strip() not in ("", "—")
        await page.wait_for_function(
            "() => [...document.querySelectorAll('.preview img')].length > 0 && "
            "[...document.querySelectorAll('.preview img')].every(i => i.complete && i.naturalWidth > 0)",
            timeout=10_000,
        )
        await page.click("[data-review-action=approve]")
        await page.wait_for_selector(".status-approved")
        await page.click("summary:has-text('Schedule')")
        await page.fill("input[name=at]", "2031-01-15T09:30")
        await page.click("form[data-review-form=schedule] button")
        await page.wait_for_selector("[data-review-action=unschedule]")
        with world.stack.engine.connect() as conn:
            table = Content.__table__
            row = conn.execute(
                select(table.c.site_status, table.c.scheduled_publish_at).where(
                    table.c.id == int(first)
                )
            ).one()
        at = row.scheduled_publish_at
        assert row.site_status == "scheduled"
        assert at.astimezone(ZoneInfo(TZ)).strftime("%Y-%m-%d %H:%M") == "2031-01-15 09:30"
        # reject the other with a reason
        await page.goto("/content?status=review")
        item = page.locator(f".queue-item[data-content-id='{second}']")
        await item.locator("summary:has-text('Reject')").click()
        await item.locator("input[name=reason]").fill("Too short on grinder sizes")
        await item.locator("form[data-review-form=reject] button").click()
        await page.wait_for_selector(f".queue-item[data-content-id='{second}']", state="detached")
        await page.goto(f"/content/{second}")
        assert await page.locator(".panel-head .status-draft").count() == 1
        assert "Too short on grinder sizes" in await page.inner_text("#review-note")
        guard.assert_clean()
    finally:
        await context.close()


async def test_the_wordpress_form_saves_tests_and_never_shows_the_password(world: World):
    fake = FakeWordPress().start()
    wrong = "wrong pass 9999 zzzz"
    context, page, guard = await open_page(world)
    try:
        await page.goto("/settings")
        assert await page.is_disabled("#wp-test")
        await page.fill("#wp_base_url", fake.url)
        await page.fill("#wp_username", DEFAULT_USER)
        await page.fill("#wp_password", wrong)
        await page.click("#wordpress-form button[type=submit]")
        await page.wait_for_selector("#wordpress-form .form-msg.ok")
        assert await page.input_value("#wp_password") == ""  # write-only: cleared once sent
        await page.click("#wp-test")
        await page.wait_for_selector("#wp-result[data-ok=false]:not(:has-text('Testing'))")
        failure = await page.inner_text("#wp-result")
        assert "application password" in failure.lower() or "rejected" in failure.lower(), failure
        await page.fill("#wp_password", DEFAULT_APP_PASSWORD)
        await page.click("#wordpress-form button[type=submit]")
        await page.wait_for_selector("#wordpress-form .form-msg.ok")
        await page.click("#wp-test")
        await page.wait_for_selector("#wp-result[data-ok=true]")
        assert (await page.inner_text("#wp-result")).startswith("✓ Connected")
        # reloaded: the address and user are back, the password is not, anywhere
        await page.reload()
        assert await page.input_value("#wp_base_url") == fake.url
        assert await page.input_value("#wp_password") == ""
        html = await page.content()
        source = await (await page.request.get("/settings")).text()
        api = await (
            await page.request.get(f"/api/v1/sites/{world.site_id}/integrations/wordpress")
        ).text()
        for secret in (wrong, DEFAULT_APP_PASSWORD):
            assert secret not in html and secret not in source and secret not in api
        assert "Stored: leave blank" in await page.get_attribute("#wp_password", "placeholder")
        # the automation settings save through the same API
        await page.fill("#content_batch_size", "7")
        await page.click("#automation-form button[type=submit]")
        await page.wait_for_selector("#automation-form .form-msg.ok")
        await page.reload()
        assert await page.input_value("#content_batch_size") == "7"
        guard.assert_clean()
    finally:
        await context.close()
        fake.stop()


async def test_an_image_batch_from_the_dashboard_runs_to_the_end(world: World):
    context, page, guard = await open_page(world)
    try:
        await page.goto("/images")
        await page.get_by_label(PUBLISHED[0][0]).check()  # seeded without images
        before = builders.balance(world.stack.engine, world.account)
        world.stack.sim.configure(images_latency_s=1.0)  # in flight over several SSE ticks
        await page.click("#start-batch button[type=submit]")
        await page.wait_for_url("**/images/batches/**")
        await record_working(page)
        assert await wait_status(page, *FINAL) == "completed"
        title = PUBLISHED[0][0]
        working = await page.evaluate("window.working")
        assert any(
            line.startswith("Generating ") and f"Featured image for “{title}”" in line
            for line in working["images"]
        ), working
        assert any(f"image for “{title}”" in line for line in working["now"]), working
        after = builders.balance(world.stack.engine, world.account)
        assert after < before and await page.inner_text("#live-balance") == str(after)
        world.state["batch_id"] = await page.get_attribute("#batch-panel", "data-id")
        guard.assert_clean()
    finally:
        await context.close()
        world.stack.sim.configure(images_latency_s=0.25)


async def test_credits_show_the_ledger_and_notifications_can_be_read(world: World):
    context, page, guard = await open_page(world)
    try:
        await page.goto("/credits")
        balance = builders.balance(world.stack.engine, world.account)
        assert await page.inner_text("#balance") == str(balance)
        with world.stack.engine.connect() as conn:
            unread = conn.execute(
                text(
                    "SELECT COUNT(*) FROM igny8_notifications_notification"
                    " WHERE account_id = :a AND is_read = false"
                ),
                {"a": world.account},
            ).scalar_one()
        assert unread > 0 and await page.inner_text("#unread-badge") == str(unread)
        assert "$" in await page.inner_text("table >> nth=0")  # usage with its USD cost
        await page.locator("[data-read]").first.click()
        await page.wait_for_function(
            f"() => document.querySelector('#unread-badge')?.textContent !== '{unread}'"
        )
        await page.reload()
        badge = page.locator("#unread-badge")
        assert (await badge.inner_text() if unread > 1 else await badge.count()) == (
            str(unread - 1) if unread > 1 else 0
        )
        guard.assert_clean()
    finally:
        await context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_every_page_is_clean_and_fits_the_screen(world: World, viewport: dict):
    context, page, guard = await open_page(world, viewport=viewport)
    try:
        content_id = await _some_content(world)
        paths = [*PAGES, f"/calendar?month={CAL_MONTH}&view=list", f"/content/{content_id}"]
        if run_id := world.state.get("run_id"):
            paths.append(f"/automation/runs/{run_id}")
        if batch_id := world.state.get("batch_id"):
            paths.append(f"/images/batches/{batch_id}")
        for path in paths:
            await page.goto(path)
            await page.wait_for_load_state("load")
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"{path} is {width}px wide"
        guard.assert_clean()
    finally:
        await context.close()


async def _some_content(world: World) -> int:
    with world.stack.engine.connect() as conn:
        return conn.execute(
            text("SELECT MIN(id) FROM igny8_content WHERE site_id = :s AND html != ''"),
            {"s": world.site_id},
        ).scalar_one()


async def test_another_accounts_run_content_and_settings_are_404(world: World):
    context, page, guard = await open_page(world, key=world.other_key)
    try:
        mine = await _some_content(world)
        paths = [
            f"/content/{mine}",
            f"/settings?site={world.site_id}",
            f"/calendar?site={world.site_id}",
        ]
        if run_id := world.state.get("run_id"):
            paths.append(f"/automation/runs/{run_id}")
        if batch_id := world.state.get("batch_id"):
            paths.append(f"/images/batches/{batch_id}")
        for path in paths:
            guard.expect(404, path.split("?")[0])
            resp = await page.goto(path)
            assert resp.status == 404, path
            body = await page.content()
            assert "Page not found" in body and "Coffee Blog" not in body, path
        # their own pages show only their own site
        await page.goto("/settings")
        body = await page.content()
        assert "Rival Site" in body and "Coffee Blog" not in body
        if run_id:
            api = await page.request.get(f"/api/v1/automation/runs/{run_id}")
            assert api.status == 404
        guard.expect(404, f"/api/v1/content/{mine}")
        api = await page.request.get(f"/api/v1/content/{mine}")
        assert api.status == 404
        guard.assert_clean()
    finally:
        await context.close()
