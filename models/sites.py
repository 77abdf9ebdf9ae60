"""Sites and their sectors, with the per-site automation and publishing settings."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationInfo, field_validator
from sqlalchemy import String
from sqlmodel import Field, SQLModel

from models.common import created_at_field

# How far apart publishing days are (domain/publishing.py owns the slot rules). Until
# migration 0003 the choices were hourly/daily/weekly; stored "hourly" became "daily".
ScheduleInterval = Literal["daily", "every_2_days", "weekly"]

# Several posts on one day go out an hour apart (domain/publishing.py): 24 fill a day.
MAX_POSTS_PER_DAY = 24


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown timezone {value!r} (use an IANA name like Europe/Berlin)"
        ) from exc
    return value


def parse_hhmm(value: str, field_name: str = "time") -> tuple[int, int]:
    """(hours, minutes) of a wall-clock "H:MM"/"HH:MM", or a ValueError naming the field."""
    try:
        hours, minutes = (int(part) for part in value.split(":"))
    except ValueError as exc:
        raise ValueError(f"{field_name} {value!r} must be HH:MM") from exc
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise ValueError(f"{field_name} {value!r} must be HH:MM between 00:00 and 23:59")
    return hours, minutes


def check_clock_time(value: str | None, info: ValidationInfo) -> str | None:
    """A field validator for "HH:MM" fields: normalised to two digits each ("7:30" → "07:30").

    Shared by the site's `publish_time` and the automation schedule's `schedule_time`, so
    both accept and refuse the same values."""
    if value is None:
        return value
    hours, minutes = parse_hhmm(value, info.field_name or "time")
    return f"{hours:02d}:{minutes:02d}"


class SiteSettings(SQLModel):
    auto_approve_content: bool = False
    auto_schedule: bool = False
    schedule_interval: ScheduleInterval = Field(default="daily", sa_type=String(20))
    publish_time: str = Field(default="09:00", max_length=5)
    timezone: str = Field(default="UTC", max_length=64)
    max_posts_per_day: int = Field(
        default=1,
        ge=1,
        le=MAX_POSTS_PER_DAY,
        description="Posts on one local day at most: publish_time, then hourly (closer near midnight)",
    )
    max_in_article_images: int = Field(default=2, ge=0, le=10)
    text_model: str | None = Field(default=None, max_length=100)
    image_model: str | None = Field(default=None, max_length=100)

    _tz = field_validator("timezone")(_check_timezone)
    _pt = field_validator("publish_time")(check_clock_time)


class SiteBase(SiteSettings):
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(default="", max_length=500)


class SiteCreate(SiteBase):
    sectors: list[str] = Field(default_factory=list, description="Sector names to create")


class SiteUpdate(SQLModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: str | None = Field(default=None, max_length=500)
    auto_approve_content: bool | None = None
    auto_schedule: bool | None = None
    schedule_interval: ScheduleInterval | None = None
    publish_time: str | None = None
    timezone: str | None = None
    max_posts_per_day: int | None = Field(default=None, ge=1, le=MAX_POSTS_PER_DAY)
    max_in_article_images: int | None = Field(default=None, ge=0, le=10)
    text_model: str | None = None
    image_model: str | None = None

    _tz = field_validator("timezone")(_check_timezone)
    _pt = field_validator("publish_time")(check_clock_time)


class Site(SiteBase, table=True):
    __tablename__ = "igny8_sites"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    is_active: bool = True
    created_at: datetime = created_at_field()


class SectorPublic(SQLModel):
    id: int
    name: str


class SitePublic(SiteBase):
    id: int
    is_active: bool
    created_at: datetime
    sectors: list[SectorPublic] = Field(default_factory=list)


class Sector(SQLModel, table=True):
    __tablename__ = "igny8_sectors"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    site_id: int = Field(foreign_key="igny8_sites.id", index=True, nullable=False)
    name: str = Field(max_length=200)
    created_at: datetime = created_at_field()
