"""Screenshots of every dashboard page at desktop and phone width, for the README.

    .venv/bin/python -m tests.screenshots [--out docs/screenshots]

Starts what the browser tests start (a Temporal dev server, the simulator, a worker, the
API on uvicorn, a SQLite database in a temporary folder), seeds the same data, runs one
automation run to the end and leaves a second one paused, then photographs each page in
headless Chromium (Debian's `chromium`) and writes `<page>-desktop.png` and
`<page>-phone.png`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from core.temporal import DATA_CONVERTER, SEARCH_ATTRIBUTES, temporal_binary
from simulator.config import SimConfig
from simulator.server import SimulatorThread
from tests import builders
from tests.browser_fixtures import DESKTOP, PHONE, chromium, running_stack
from tests.fake_wordpress import DEFAULT_APP_PASSWORD, DEFAULT_USER, FakeWordPress
from tests.sim_fixture import KEYWORDS
from tests.test_dashboard import CAL_MONTH, seed

ROOT = Path(__file__).resolve().parent.parent
MAX_HEIGHT = 2400
FINAL = "p => ['completed', 'cancelled', 'failed'].includes(p.dataset.status)"


async def wait_panel(page: Any, condition: str, timeout_s: float = 120) -> None:
    await page.wait_for_function(
        f"() => {{ const p = document.querySelector('.panel[data-kind]'); "
        f"return p && ({condition})(p); }}",
        timeout=timeout_s * 1000,
    )


async def sign_in(context: Any, key: str) -> Any:
    page = await context.new_page()
    await page.goto("/login")
    await page.fill("#api_key", key)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r"/(automation)?$"))
    return page


async def prepare(
    browser: Any, stack: Any, data: dict[str, Any], fake: FakeWordPress, out: Path
) -> dict:
    """One finished run, one image batch, a WordPress connection, and a second run paused
    mid-way (photographed live first, naming the articles being written, as
    `automation-live-desktop.png`); returns the paths to photograph."""
    context = await browser.new_context(viewport=DESKTOP, base_url=stack.url)
    page = await sign_in(context, data["key"])
    stack.sim.configure(latency_s=0.05, images_latency_s=0.2)
    await page.goto("/automation")
    await page.click("#start-run button[type=submit]")
    await page.wait_for_url("**/automation/runs/**")
    await wait_panel(page, FINAL)
    first_run = await page.get_attribute("#run-panel", "data-id")

    await page.goto("/images")
    await page.get_by_label("Espresso at Home").check()
    await page.click("#start-batch button[type=submit]")
    await page.wait_for_url("**/images/batches/**")
    await wait_panel(page, FINAL)
    batch = page.url.split(stack.url, 1)[1]

    await page.goto("/settings")
    await page.fill("#wp_base_url", fake.url)
    await page.fill("#wp_username", DEFAULT_USER)
    await page.fill("#wp_password", DEFAULT_APP_PASSWORD)
    await page.click("#wordpress-form button[type=submit]")
    await page.wait_for_selector("#wordpress-form .form-msg.ok")
    await page.click("#wp-test")
    await page.wait_for_selector("#wp-result[data-ok=true]")

    builders.keywords(
        stack.engine, data["account"], data["site_id"], [*KEYWORDS[5:], "coffee scales"]
    )
    stack.sim.configure(latency_s=0.5)
    await page.goto("/automation")
    await page.click("#start-run button[type=submit]")
    await page.wait_for_url("**/automation/runs/**")
    await wait_panel(page, "p => Number(p.querySelector('[data-stage=content] [data-done]')"
                     ".textContent) > 0")  # fmt: skip
    await wait_panel(page, "p => !p.querySelector('[data-stage=content] .stage-items').hidden")
    await page.screenshot(path=out / "automation-live-desktop.png", full_page=True)
    await page.click("[data-action=pause]")
    await wait_panel(page, "p => p.dataset.status === 'paused'")
    await context.close()

    with stack.engine.connect() as conn:
        from sqlalchemy import text

        article = conn.execute(
            text(
                "SELECT c.id FROM igny8_content c WHERE c.site_id = :s ORDER BY (SELECT COUNT(*)"
                " FROM igny8_images i WHERE i.content_id = c.id AND i.status = 'generated')"
                " DESC, LENGTH(c.html) DESC LIMIT 1"
            ),
            {"s": data["site_id"]},
        ).scalar_one()
    return {
        "automation": "/automation",
        "automation-run": f"/automation/runs/{first_run}",
        "images": "/images",
        "image-batch": batch,
        "content": "/content",
        "article": f"/content/{article}",
        "calendar": f"/calendar?month={CAL_MONTH}",
        "calendar-list": f"/calendar?month={CAL_MONTH}&view=list",
        "settings": "/settings",
        "credits": "/credits",
        "not-found": "/no/such/page",
    }


async def photograph(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        data_converter=DATA_CONVERTER,
        dev_server_existing_path=temporal_binary(),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--dynamic-config-value", "limit.maxIDLength=255"],
    )
    sim = SimulatorThread(SimConfig(image_size=640)).start()
    fake = FakeWordPress().start()
    written: list[Path] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with chromium() as browser, running_stack(env.client, sim, Path(tmp)) as stack:
                data = seed(stack)
                paths = await prepare(browser, stack, data, fake, out)
                for width_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                    context = await browser.new_context(
                        viewport=viewport, base_url=stack.url, device_scale_factor=1
                    )
                    login = await context.new_page()
                    await login.goto("/login")
                    shot = out / f"login-{width_name}.png"
                    await login.screenshot(path=shot)
                    written.append(shot)
                    page = await sign_in(context, data["key"])
                    for name, path in paths.items():
                        await page.goto(path)
                        await page.wait_for_load_state("networkidle")
                        shot = out / f"{name}-{width_name}.png"
                        height = await page.evaluate("document.documentElement.scrollHeight")
                        clip = {"x": 0, "y": 0, "width": viewport["width"], "height": height}
                        clip["height"] = min(height, MAX_HEIGHT)  # long pages: their top
                        await page.screenshot(path=shot, full_page=True, clip=clip)
                        written.append(shot)
                    await context.close()
    finally:
        fake.stop()
        sim.stop()
        await env.shutdown()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    for path in asyncio.run(photograph(args.out)):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
