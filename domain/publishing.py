"""Publish slots: when approved content goes out. The one module that owns these rules;
the automation run's last stage and the publishing workflow both call it, so a site's
calendar never depends on who scheduled an item.

The rules, for a site's `timezone`, `publish_time`, `schedule_interval` and
`max_posts_per_day` (models/sites.py `SiteSettings`):

1. **Wall-clock slots.** A publishing day's slots are `publish_time` in the site's
   timezone, then every hour after it (`SLOT_SPACING`), `max_posts_per_day` of them.
   When fewer hours than that are left before local midnight, the day's slots are spaced
   evenly in what is left, in whole minutes (at least one); slots that would still reach
   midnight are not used. So 09:00 with 3 a day is 09:00, 10:00, 11:00; 23:00 with 3 a day
   is 23:00, 23:20, 23:40; 23:59 with 2 a day has only 23:59. A day never spills into the
   next, so the per-day limit is a plain count per local date.
2. **Days.** `daily` publishes every day, `every_2_days` every second day, `weekly`
   every seventh day. With slots already taken, the days count from the local day of the
   last taken slot: its remaining slots after that last one first (when the day has room
   left, which happens only with several posts a day), then that day + interval,
   + 2 × interval, … With nothing taken (or every taken slot already in the past), the
   first day is today if a slot is still ahead today, else the next day that has one;
   the next days follow it at the interval.
3. **Order and capacity.** Every new slot is after `now` and after every taken slot, the
   slots are strictly increasing (so no two items ever share one), and no local date
   holds more than `max_posts_per_day` items, the taken ones included.
4. **Daylight saving** (zoneinfo, so the IANA rules of the slot's date). A wall time that
   does not exist (spring forward: 02:30 on the night clocks jump from 02:00 to 03:00)
   moves forward to the first instant that exists, the moment of the jump (03:00 there);
   if that lands on an instant the day already uses, the later wall time is dropped
   rather than doubled up. A wall time that happens twice (fall back) takes its first
   occurrence (`fold=0`).
5. **Time values.** Every datetime in or out is timezone-aware; slots come back in UTC,
   as the database stores them. A naive datetime is refused (ValueError): guessing its
   zone is how a schedule drifts by hours.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from models.pipeline import Content
from models.sites import parse_hhmm

INTERVAL_DAYS: dict[str, int] = {"daily": 1, "every_2_days": 2, "weekly": 7}
SLOT_SPACING = timedelta(hours=1)
MINUTES_PER_DAY = 24 * 60
SCHEDULED = "scheduled"  # Content.site_status of an item that holds a slot


class PublishSettings(Protocol):
    """What the rules read; `Site` and `SiteSettings` have it."""

    schedule_interval: str
    publish_time: str
    timezone: str
    max_posts_per_day: int


@dataclass(frozen=True)
class _Rules:
    tz: ZoneInfo
    walls: tuple[time, ...]
    step_days: int
    per_day: int

    @classmethod
    def of(cls, settings: PublishSettings) -> _Rules:
        if settings.schedule_interval not in INTERVAL_DAYS:
            raise ValueError(
                f"schedule_interval {settings.schedule_interval!r} must be one of "
                f"{', '.join(INTERVAL_DAYS)}"
            )
        per_day = int(settings.max_posts_per_day)
        if per_day < 1:
            raise ValueError(f"max_posts_per_day must be at least 1, not {per_day}")
        return cls(
            tz=ZoneInfo(settings.timezone),
            walls=tuple(day_wall_times(settings.publish_time, per_day)),
            step_days=INTERVAL_DAYS[settings.schedule_interval],
            per_day=per_day,
        )


def day_wall_times(publish_time: str, max_posts_per_day: int) -> list[time]:
    """The local wall times of one publishing day's slots (rule 1), earliest first."""
    hours, minutes = parse_hhmm(publish_time, "publish_time")
    start = hours * 60 + minutes
    hourly = int(SLOT_SPACING.total_seconds()) // 60
    spacing = max(1, min(hourly, (MINUTES_PER_DAY - start) // max(1, max_posts_per_day)))
    offsets = (start + k * spacing for k in range(max_posts_per_day))
    return [time(m // 60, m % 60) for m in offsets if m < MINUTES_PER_DAY]


def next_slots(
    settings: PublishSettings, taken: Sequence[datetime], count: int, now: datetime
) -> list[datetime]:
    """The next `count` free publish slots (aware UTC, increasing) for approved content,
    by the rules in this module's docstring. Pure: `taken` is every slot the site's
    scheduled content already holds (see `taken_slots`)."""
    if count <= 0:
        return []
    rules = _Rules.of(settings)
    now_utc = _as_utc(now, "now")
    taken_utc = sorted(_as_utc(slot, "taken slot") for slot in taken)
    per_date = Counter(_local_date(slot, rules.tz) for slot in taken_utc)
    last = taken_utc[-1] if taken_utc else None
    after = max(now_utc, last) if last is not None else now_utc
    searching = last is None or last < now_utc  # no grid yet: look for the first day
    day = _local_date(now_utc if searching else last, rules.tz)
    slots: list[datetime] = []
    while len(slots) < count:
        found = _fill_day(day, rules, per_date, after, count - len(slots))
        slots += found
        if found:
            after, searching = found[-1], False
        day += timedelta(days=1 if searching else rules.step_days)
    return slots


def _fill_day(
    day: date, rules: _Rules, per_date: Counter[date], after: datetime, wanted: int
) -> list[datetime]:
    """Up to `wanted` of `day`'s slots that are later than `after` and whose local date
    still has room; `per_date` counts the ones taken here."""
    found: list[datetime] = []
    for slot in day_slots(day, rules.walls, rules.tz):
        if len(found) == wanted:
            break
        local = _local_date(slot, rules.tz)
        if slot <= after or per_date[local] >= rules.per_day:
            continue
        found.append(slot)
        per_date[local] += 1
        after = slot
    return found


def day_slots(day: date, walls: Iterable[time], tz: ZoneInfo) -> list[datetime]:
    """The UTC instants of `day`'s wall times in `tz` (rule 4), strictly increasing: wall
    times that daylight saving folds onto one instant keep only the first."""
    instants: list[datetime] = []
    for wall in walls:
        instant = local_instant(datetime.combine(day, wall), tz)
        if not instants or instant > instants[-1]:
            instants.append(instant)
    return instants


def local_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of the naive local `wall` in `tz`: its first occurrence when it is
    ambiguous, the end of the gap when it does not exist."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    return _gap_end(wall, tz)


def _gap_end(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant the clock jumped over the nonexistent `wall`. By PEP 495, fold=1 reads
    a gap's wall time with the offset after the jump and fold=0 with the one before, which
    brackets the jump: `low` is before it, `high` at or after it; bisect to the second."""
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    offset_after = high.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + timedelta(seconds=(high - low).total_seconds() // 2)
        if middle.astimezone(tz).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return high


def taken_slots(conn: Connection, site_id: int) -> list[datetime]:
    """The slots the site's scheduled content holds (aware UTC, earliest first): what
    `next_slots` must keep clear of."""
    table = Content.__table__
    stmt = (
        select(table.c.scheduled_publish_at)
        .where(
            table.c.site_id == site_id,
            table.c.site_status == SCHEDULED,
            table.c.scheduled_publish_at.is_not(None),
        )
        .order_by(table.c.scheduled_publish_at)
    )
    return list(conn.execute(stmt).scalars())


def _as_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} {value.isoformat()} has no timezone: pass an aware datetime")
    return value.astimezone(UTC)


def _local_date(instant: datetime, tz: ZoneInfo) -> date:
    return instant.astimezone(tz).date()


__all__ = [
    "INTERVAL_DAYS",
    "SLOT_SPACING",
    "PublishSettings",
    "day_slots",
    "day_wall_times",
    "local_instant",
    "next_slots",
    "taken_slots",
]


def sites_with_scheduled_content(conn: Connection) -> list[tuple[int, int]]:
    """(account, site) of every site with content scheduled or being published: their
    publishers must be running (a worker pokes them all when it starts)."""
    from models.pipeline import Content

    t = Content.__table__
    rows = conn.execute(
        select(t.c.account_id, t.c.site_id)
        .where(t.c.site_status.in_(("scheduled", "publishing")))
        .group_by(t.c.account_id, t.c.site_id)
    ).all()
    return [(r.account_id, r.site_id) for r in rows]
