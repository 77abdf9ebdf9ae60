"""Scheduled runs: a site's automation schedule is a Temporal Schedule, created, changed
and removed with its config; a scheduled start while another run of the site is active is
skipped and recorded."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from temporalio.client import ScheduleOverlapPolicy
from temporalio.service import RPCError

from models.runs import AutomationRun
from tests import builders
from tests.temporal_fixtures import WorkerCtx
from tests.test_api_images import api_client
from tests.test_automation_run import seeded_site, watch
from workflows.client import schedule_id

pytestmark = pytest.mark.temporal
FINAL = {"completed", "cancelled", "failed"}


def run_rows(engine, site_id: int) -> list:
    t = AutomationRun.__table__
    with engine.connect() as conn:
        return conn.execute(select(t).where(t.c.site_id == site_id).order_by(t.c.id)).all()


async def wait_rows(engine, site_id: int, done, timeout_s: float = 60) -> list:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done(rows := run_rows(engine, site_id)):
        assert asyncio.get_running_loop().time() < deadline, rows
        await asyncio.sleep(0.1)
    return rows


async def test_the_schedule_follows_the_config_in_the_sites_timezone(wctx: WorkerCtx):
    acct, headers, site_id = seeded_site(wctx, credits=100, timezone="Europe/Berlin")
    url = f"/sites/{site_id}/automation-config"
    handle = wctx.client.get_schedule_handle(schedule_id(acct, site_id))
    async with api_client(wctx) as api:
        daily = {"schedule_enabled": True, "schedule_frequency": "daily", "schedule_time": "06:30"}
        assert (await api.put(url, json=daily, headers=headers)).status_code == 200
        spec = (await handle.describe()).schedule.spec
        calendar = spec.calendars[0]
        assert spec.time_zone_name == "Europe/Berlin"
        assert (calendar.hour[0].start, calendar.minute[0].start) == (6, 30)
        assert (calendar.day_of_week[0].start, calendar.day_of_week[0].end) == (0, 6)
        policy = (await handle.describe()).schedule.policy
        assert policy.overlap == ScheduleOverlapPolicy.SKIP
        weekly = {"schedule_frequency": "weekly", "schedule_weekday": 0, "schedule_time": "07:15"}
        assert (await api.put(url, json=weekly, headers=headers)).status_code == 200
        calendar = (await handle.describe()).schedule.spec.calendars[0]
        assert calendar.day_of_week[0].start == 1  # Monday, counted from Sunday by Temporal
        assert (calendar.hour[0].start, calendar.minute[0].start) == (7, 15)
        off = {"schedule_enabled": False}
        assert (await api.put(url, json=off, headers=headers)).status_code == 200
    with pytest.raises(RPCError):
        await handle.describe()


async def test_a_scheduled_start_runs_and_one_while_a_run_is_active_is_skipped(wctx: WorkerCtx):
    acct, headers, site_id = seeded_site(wctx, credits=20_000)
    url = f"/sites/{site_id}/automation-config"
    handle = wctx.client.get_schedule_handle(schedule_id(acct, site_id))
    async with api_client(wctx) as api:
        on = {"schedule_enabled": True, "schedule_time": "03:00"}
        assert (await api.put(url, json=on, headers=headers)).status_code == 200
        try:
            await handle.trigger()  # as if it were 03:00
            rows = await wait_rows(wctx.engine, site_id, lambda r: r and r[0].finished_at)
            assert rows[0].status == "completed" and rows[0].run_id.startswith(
                f"automation-{acct}-{site_id}-scheduled"
            )
            wctx.sim.configure(latency_s=0.3)
            builders.keywords(wctx.engine, acct, site_id, ["decaf espresso", "espresso tamper"])
            started = await api.post("/automation/runs", json={"site_id": site_id}, headers=headers)
            run_id = started.json()["run_id"]
            await handle.trigger()  # while the API's run is active
            rows = await wait_rows(
                wctx.engine, site_id, lambda r: any(x.status == "skipped" for x in r)
            )
            skipped = next(r for r in rows if r.status == "skipped")
            assert skipped.summary["skipped_because"] == run_id and skipped.finished_at
            final = await watch(api, headers, run_id, lambda p: p["status"] in FINAL)
            assert final["status"] == "completed"
        finally:
            await handle.delete()
