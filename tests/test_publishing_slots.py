"""Publish slots (domain/publishing.py): examples for each rule, then properties checked
with hypothesis over timezones, dates around daylight-saving changes, publish times,
intervals, posts per day and slots already taken."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine, update

from domain.publishing import (
    INTERVAL_DAYS,
    day_slots,
    day_wall_times,
    local_instant,
    next_slots,
    taken_slots,
)
from models import Content, SiteSettings
from tests import builders


def site(**fields: object) -> SiteSettings:
    return SiteSettings.model_validate({"timezone": "UTC", **fields})


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# ---- intervals ------------------------------------------------------------------------
NEW_YEAR = utc(2025, 1, 1)


@pytest.mark.parametrize(
    ("interval", "days"),
    [("daily", [1, 2, 3]), ("every_2_days", [1, 3, 5]), ("weekly", [1, 8, 15])],
)
def test_each_interval_spaces_the_days(interval: str, days: list[int]) -> None:
    slots = next_slots(site(schedule_interval=interval), [], 3, NEW_YEAR)
    assert slots == [utc(2025, 1, day, 9) for day in days]


@pytest.mark.parametrize(
    ("interval", "days"), [("daily", [11, 12]), ("every_2_days", [12, 14]), ("weekly", [17, 24])]
)
def test_days_count_from_the_last_taken_slot(interval: str, days: list[int]) -> None:
    taken = [utc(2025, 1, 3, 9), utc(2025, 1, 10, 9)]
    slots = next_slots(site(schedule_interval=interval), taken, 2, NEW_YEAR)
    assert slots == [utc(2025, 1, day, 9) for day in days]


def test_the_slot_is_the_publish_time_in_the_sites_timezone() -> None:
    settings = site(timezone="Asia/Kolkata", publish_time="07:45")
    assert next_slots(settings, [], 1, NEW_YEAR) == [utc(2025, 1, 1, 2, 15)]


# ---- never in the past ----------------------------------------------------------------
@pytest.mark.parametrize("now", [utc(2025, 1, 1, 9), utc(2025, 1, 1, 9, 0, 1), utc(2025, 1, 1, 23)])
def test_a_passed_publish_time_moves_to_the_next_day(now: datetime) -> None:
    weekly = site(schedule_interval="weekly")
    assert next_slots(weekly, [], 2, now) == [utc(2025, 1, 2, 9), utc(2025, 1, 9, 9)]


def test_taken_slots_in_the_past_do_not_drag_new_ones_into_the_past() -> None:
    taken = [utc(2024, 11, 20, 9), utc(2024, 12, 1, 9)]
    now = utc(2025, 1, 1, 10)
    slots = next_slots(site(schedule_interval="every_2_days"), taken, 2, now)
    assert slots == [utc(2025, 1, 2, 9), utc(2025, 1, 4, 9)]


def test_nothing_is_asked_nothing_is_given_and_naive_times_are_refused() -> None:
    assert next_slots(site(), [], 0, NEW_YEAR) == []
    with pytest.raises(ValueError, match="no timezone"):
        next_slots(site(), [], 1, datetime(2025, 1, 1))
    with pytest.raises(ValueError, match=r"taken slot .* no timezone"):
        next_slots(site(), [datetime(2025, 1, 1, 9)], 1, NEW_YEAR)


# ---- several posts a day ---------------------------------------------------------------
def test_several_posts_a_day_go_out_an_hour_apart() -> None:
    slots = next_slots(site(max_posts_per_day=3), [], 5, NEW_YEAR)
    expected = [(1, 9), (1, 10), (1, 11), (2, 9), (2, 10)]
    assert slots == [utc(2025, 1, day, hour) for day, hour in expected]


def test_the_last_taken_day_is_filled_up_before_the_next_interval_day() -> None:
    settings = site(max_posts_per_day=2, schedule_interval="every_2_days")
    slots = next_slots(settings, [utc(2025, 1, 1, 9)], 3, NEW_YEAR)
    assert slots == [utc(2025, 1, 1, 10), utc(2025, 1, 3, 9), utc(2025, 1, 3, 10)]


def test_a_day_holding_the_maximum_gets_no_more() -> None:
    """Taken slots count toward their day even off the grid (scheduled by hand)."""
    settings = site(max_posts_per_day=2)
    taken = [utc(2025, 1, 1, 8), utc(2025, 1, 1, 9, 30)]
    assert next_slots(settings, taken, 2, NEW_YEAR) == [utc(2025, 1, 2, 9), utc(2025, 1, 2, 10)]


def test_late_publish_times_squeeze_the_day_and_never_spill_past_midnight() -> None:
    assert day_wall_times("23:00", 3) == [time(23, 0), time(23, 20), time(23, 40)]
    assert day_wall_times("23:59", 2) == [time(23, 59)]
    assert day_wall_times("00:00", 24) == [time(hour) for hour in range(24)]
    slots = next_slots(site(publish_time="23:00", max_posts_per_day=3), [], 4, NEW_YEAR)
    assert slots[-1] == utc(2025, 1, 2, 23)


# ---- daylight saving -------------------------------------------------------------------
BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


@pytest.mark.parametrize(
    ("zone", "publish_time", "now", "expected"),
    [
        # Berlin, 2025-03-30: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        (BERLIN, "02:30", utc(2025, 3, 29, 12), [utc(2025, 3, 30, 1), utc(2025, 3, 31, 0, 30)]),
        # Berlin, 2025-10-26: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        (
            BERLIN,
            "02:30",
            utc(2025, 10, 25, 12),
            [utc(2025, 10, 26, 0, 30), utc(2025, 10, 27, 1, 30)],
        ),
        # New York, 2025-03-09: 02:00 EST jumps to 03:00 EDT.
        (NEW_YORK, "02:30", utc(2025, 3, 8, 12), [utc(2025, 3, 9, 7), utc(2025, 3, 10, 6, 30)]),
        # New York, 2025-11-02: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        (
            NEW_YORK,
            "01:30",
            utc(2025, 11, 1, 12),
            [utc(2025, 11, 2, 5, 30), utc(2025, 11, 3, 6, 30)],
        ),
        # An existing time keeps its wall clock across the change (09:00 = 08:00Z, 07:00Z).
        (BERLIN, "09:00", utc(2025, 3, 29), [utc(2025, 3, 29, 8), utc(2025, 3, 30, 7)]),
        (NEW_YORK, "09:00", utc(2025, 11, 1, 12), [utc(2025, 11, 1, 13), utc(2025, 11, 2, 14)]),
    ],
)
def test_daylight_saving_changes(
    zone: str, publish_time: str, now: datetime, expected: list[datetime]
) -> None:
    settings = site(timezone=zone, publish_time=publish_time)
    assert next_slots(settings, [], 2, now) == expected


def test_wall_times_that_dst_folds_onto_one_instant_keep_only_the_first() -> None:
    new_york = ZoneInfo(NEW_YORK)
    walls = [time(1, 30), time(2, 0), time(2, 30), time(3, 0), time(3, 30)]
    slots = day_slots(date(2025, 3, 9), walls, new_york)
    assert slots == [utc(2025, 3, 9, 6, 30), utc(2025, 3, 9, 7), utc(2025, 3, 9, 7, 30)]
    several = site(timezone=NEW_YORK, publish_time="01:30", max_posts_per_day=3)
    assert next_slots(several, [], 3, utc(2025, 3, 9)) == slots[:3]


def test_a_gap_of_half_an_hour_and_a_gap_of_a_day() -> None:
    """Lord Howe springs forward 30 minutes; Samoa skipped 2011-12-30 entirely."""
    lord_howe = ZoneInfo("Australia/Lord_Howe")  # 2025-10-05 02:00 -> 02:30
    assert local_instant(datetime(2025, 10, 5, 2, 10), lord_howe).astimezone(lord_howe) == (
        datetime(2025, 10, 5, 2, 30, tzinfo=lord_howe)
    )
    apia = ZoneInfo("Pacific/Apia")
    moved = local_instant(datetime(2011, 12, 30, 9), apia).astimezone(apia)
    assert moved.replace(tzinfo=None) == datetime(2011, 12, 31)


# ---- properties ------------------------------------------------------------------------
ALL_ZONES = sorted(available_timezones())
DST_ZONES = [
    BERLIN,
    NEW_YORK,
    "Europe/London",
    "Europe/Dublin",  # negative DST in the tz database
    "America/Santiago",  # changes at midnight
    "America/Havana",
    "Australia/Lord_Howe",  # 30-minute change
    "Pacific/Chatham",
    "Asia/Tehran",
    "Pacific/Apia",
]
ZONES = st.one_of(st.sampled_from(DST_ZONES), st.sampled_from(ALL_ZONES))
CLOCK = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
PUBLISH_TIMES = st.one_of(st.sampled_from(["00:00", "01:30", "02:00", "02:30", "23:59"]), CLOCK)


Change = tuple[datetime, timedelta, timedelta]  # (instant, offset before, offset after)


@lru_cache(maxsize=4096)
def offset_changes(zone: str, year: int) -> tuple[Change, ...]:
    """Every change of `zone`'s UTC offset in `year`, found day by day, then to the second."""
    tz = ZoneInfo(zone)
    noons = [datetime(year, 1, 1, 12, tzinfo=UTC) + timedelta(days=n) for n in range(366)]
    changes = []
    for low, high in pairwise(noons):
        before, after = low.astimezone(tz).utcoffset(), high.astimezone(tz).utcoffset()
        if before != after and before is not None and after is not None:
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) // 2
                low, high = (
                    (low, middle) if middle.astimezone(tz).utcoffset() == after else (middle, high)
                )
            changes.append((high, before, after))
    return tuple(changes)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[SiteSettings, list[datetime], int, datetime]:
    """A site, its taken slots, how many slots to ask for, and now: a quarter of the time a
    few days before a change of the zone's offset, half the time with the publish time
    inside the wall-clock time the change skips or repeats."""
    zone = draw(ZONES)
    year = draw(st.integers(2000, 2037))
    changes = offset_changes(zone, year)
    where = draw(st.sampled_from(["any day", "before a change", "in a change", "in a change"]))
    publish_time = draw(PUBLISH_TIMES)
    if not changes or where == "any day":
        day = date(year, 1, 1) + timedelta(days=draw(st.integers(0, 364)))
        now = datetime.combine(day, time(draw(st.integers(0, 23)), draw(st.integers(0, 59))), UTC)
    else:
        instant, before, after = draw(st.sampled_from(changes))
        # "in a change": less than a day before, so the first slot falls on that day
        minutes_before = 4 * 24 * 60 if where == "before a change" else 23 * 60
        now = instant - timedelta(minutes=draw(st.integers(1, minutes_before)))
        if where == "in a change":
            skipped_or_repeated = (instant + min(before, after)).replace(tzinfo=None)
            minutes = int(abs(after - before).total_seconds()) // 60
            wall = skipped_or_repeated + timedelta(
                minutes=draw(st.integers(0, max(0, minutes - 1)))
            )
            publish_time = f"{wall.hour:02d}:{wall.minute:02d}"
    settings = SiteSettings(
        timezone=zone,
        publish_time=publish_time,
        schedule_interval=draw(st.sampled_from(sorted(INTERVAL_DAYS))),
        max_posts_per_day=draw(st.one_of(st.just(1), st.integers(1, 24))),
    )
    latest = 0 if where == "in a change" else 12 * 24 * 60  # taken ones would move us past it
    offsets = st.integers(-3 * 24 * 60, latest)
    taken = [now + timedelta(minutes=m) for m in draw(st.lists(offsets, max_size=6, unique=True))]
    return settings, taken, draw(st.integers(1, 12)), now


PROPERTIES = hypothesis_settings(
    max_examples=400,
    deadline=timedelta(milliseconds=500),
    suppress_health_check=[HealthCheck.too_slow],
)


def _jumped_over_a_wall_time(slot: datetime, tz: ZoneInfo, walls: list[time]) -> bool:
    """`slot` is the instant the clock jumped forward, over one of the day's wall times."""
    before = (slot - timedelta(seconds=1)).astimezone(tz)
    after = slot.astimezone(tz)
    if not before.utcoffset() < after.utcoffset():  # type: ignore[operator]
        return False
    gap_start = before.replace(tzinfo=None) + timedelta(seconds=1)
    gap_end = after.replace(tzinfo=None)
    days = {gap_start.date(), gap_end.date()}
    return any(gap_start <= datetime.combine(d, w) < gap_end for d in days for w in walls)


def _is_ambiguous(slot: datetime, tz: ZoneInfo) -> bool:
    wall = slot.astimezone(tz).replace(tzinfo=None)
    return (
        wall.replace(tzinfo=tz, fold=0).utcoffset() != wall.replace(tzinfo=tz, fold=1).utcoffset()
    )


@PROPERTIES
@given(scenarios())
def test_slot_properties(scenario: tuple[SiteSettings, list[datetime], int, datetime]) -> None:
    settings, taken, count, now = scenario
    tz = ZoneInfo(settings.timezone)
    slots = next_slots(settings, taken, count, now)

    assert len(slots) == count
    assert all(slot.tzinfo is UTC for slot in slots)
    assert all(a < b for a, b in pairwise(slots)), "strictly increasing"
    assert slots[0] > max([now, *taken]), "after now and after every taken slot"
    assert not set(slots) & set(taken), "no two items in one slot"

    per_day = Counter(slot.astimezone(tz).date() for slot in [*taken, *slots])
    for slot in slots:
        assert per_day[slot.astimezone(tz).date()] <= settings.max_posts_per_day

    walls = day_wall_times(settings.publish_time, settings.max_posts_per_day)
    irregular = set()
    for slot in slots:
        local = slot.astimezone(tz)
        if local.time() not in walls:
            assert _jumped_over_a_wall_time(slot, tz, walls), f"{local} is not a slot time"
            irregular.add(local.date())
            continue
        first = local.replace(tzinfo=None).replace(tzinfo=tz, fold=0).astimezone(UTC)
        assert slot == first, f"{local} is the second occurrence of its wall time"
    if irregular:
        event("a slot moved forward over a skipped wall time")
    if any(_is_ambiguous(slot, tz) for slot in slots):
        event("a slot at a repeated wall time")

    step = INTERVAL_DAYS[settings.schedule_interval]
    days = sorted({slot.astimezone(tz).date() for slot in slots} - irregular)
    for earlier, later in pairwise(days):
        assert (later - earlier).days % step == 0, (earlier, later)


@hypothesis_settings(max_examples=100, deadline=timedelta(milliseconds=500))
@given(scenarios(), st.integers(1, 11))
def test_scheduling_in_pieces_gives_the_same_calendar(
    scenario: tuple[SiteSettings, list[datetime], int, datetime], first: int
) -> None:
    """What one call schedules, two calls (the second seeing the first's slots) do too."""
    settings, taken, count, now = scenario
    whole = next_slots(settings, taken, first + count, now)
    head = next_slots(settings, taken, first, now)
    assert head + next_slots(settings, [*taken, *head], count, now) == whole


# ---- the database helper ---------------------------------------------------------------
def test_taken_slots_are_the_sites_scheduled_content(engine: Engine) -> None:
    account_id, _ = builders.account(engine)
    site_row, other_site = builders.site(engine, account_id), builders.site(engine, account_id)
    rows = [
        (site_row.id, "scheduled", utc(2025, 1, 3, 9)),
        (site_row.id, "scheduled", utc(2025, 1, 1, 9)),
        (site_row.id, "published", utc(2024, 12, 30, 9)),
        (site_row.id, "not_published", None),
        (other_site.id, "scheduled", utc(2025, 1, 2, 9)),
    ]
    contents = [
        builders.task_with_content(engine, account_id, site_id, f"Post {n}")[1]
        for n, (site_id, _, _) in enumerate(rows)
    ]
    with engine.begin() as conn:
        for content, (_, status, at) in zip(contents, rows, strict=True):
            conn.execute(
                update(Content)
                .where(Content.id == content.id)
                .values(site_status=status, scheduled_publish_at=at)
            )
    with engine.connect() as conn:
        assert taken_slots(conn, site_row.id) == [utc(2025, 1, 1, 9), utc(2025, 1, 3, 9)]
        assert taken_slots(conn, other_site.id) == [utc(2025, 1, 2, 9)]
