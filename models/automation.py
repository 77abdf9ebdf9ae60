"""A site's automation settings: batch sizes per stage, models, and the run schedule.

Every field has a default, so a site without a stored row runs with
`AutomationConfigBase()`: the API answers those defaults and the run uses them
(`load_automation_config`). Models and `max_in_article_images` left unset (null) fall
back to the site's settings, and a site's models to the account's billing defaults.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, ValidationInfo, field_validator
from sqlalchemy import Connection, String, select
from sqlmodel import Field, SQLModel

from models.common import created_at_field
from models.sites import check_clock_time

ScheduleFrequency = Literal["daily", "weekly"]

MAX_INT32 = 2**31 - 1  # PostgreSQL INTEGER; bigger values are refused before the database
WEEKDAY_REQUIRED = (
    "schedule_weekday (0 = Monday … 6 = Sunday) is required when schedule_frequency is 'weekly'"
)


def _check_weekday(value: int | None, info: ValidationInfo) -> int | None:
    """A weekly schedule needs its day. Checked on the whole config (the API validates
    the stored config merged with the changes), so a partial update is judged as saved."""
    if value is None and info.data.get("schedule_frequency") == "weekly":
        raise ValueError(WEEKDAY_REQUIRED)
    return value


class AutomationConfigBase(SQLModel):
    keywords_per_cluster_call: int = Field(
        default=20, ge=5, le=100, description="Keywords sent in one clustering AI call"
    )
    ideas_batch_size: int = Field(
        default=10, ge=1, le=50, description="Clusters in idea generation at once"
    )
    content_batch_size: int = Field(
        default=10, ge=1, le=50, description="Tasks in content generation at once"
    )
    image_prompts_batch_size: int = Field(
        default=10, ge=1, le=50, description="Articles in image-prompt extraction at once"
    )
    image_batch_size: int = Field(
        default=5, ge=1, le=50, description="Articles per child image batch"
    )
    max_keywords_per_run: int | None = Field(
        default=None, ge=1, le=MAX_INT32, description="Cap on keywords one run takes; null: all"
    )
    text_model: str | None = Field(
        default=None, max_length=100, description="Text model; null: the site's"
    )
    image_model: str | None = Field(
        default=None, max_length=100, description="Image model; null: the site's"
    )
    max_in_article_images: int | None = Field(
        default=None, ge=0, le=10, description="Images inside an article; null: the site's"
    )
    schedule_enabled: bool = Field(default=False, description="Start runs on the schedule")
    schedule_frequency: ScheduleFrequency = Field(default="daily", sa_type=String(10))
    schedule_time: str = Field(
        default="09:00", max_length=5, description="HH:MM in the site's timezone"
    )
    schedule_weekday: int | None = Field(
        default=None,
        ge=0,
        le=6,
        description="0 = Monday … 6 = Sunday; required when schedule_frequency is weekly",
        schema_extra={"validate_default": True},  # so a missing weekday is checked too
    )

    _time = field_validator("schedule_time")(check_clock_time)
    _weekday = field_validator("schedule_weekday", mode="after")(_check_weekday)


class AutomationConfigUpdate(SQLModel):
    """A PUT body: every field optional; omitted fields keep their saved (or default) value,
    null resets a nullable field to "use the site's". Unknown fields are refused (a typo
    would otherwise be a silent no-op)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    keywords_per_cluster_call: int | None = Field(default=None, ge=5, le=100)
    ideas_batch_size: int | None = Field(default=None, ge=1, le=50)
    content_batch_size: int | None = Field(default=None, ge=1, le=50)
    image_prompts_batch_size: int | None = Field(default=None, ge=1, le=50)
    image_batch_size: int | None = Field(default=None, ge=1, le=50)
    max_keywords_per_run: int | None = Field(default=None, ge=1, le=MAX_INT32)
    text_model: str | None = Field(default=None, max_length=100)
    image_model: str | None = Field(default=None, max_length=100)
    max_in_article_images: int | None = Field(default=None, ge=0, le=10)
    schedule_enabled: bool | None = None
    schedule_frequency: ScheduleFrequency | None = None
    schedule_time: str | None = None
    schedule_weekday: int | None = Field(default=None, ge=0, le=6)

    _time = field_validator("schedule_time")(check_clock_time)


class AutomationConfig(AutomationConfigBase, table=True):
    __tablename__ = "igny8_automation_configs"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    site_id: int = Field(foreign_key="igny8_sites.id", unique=True, nullable=False)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()


class AutomationConfigPublic(AutomationConfigBase):
    site_id: int
    updated_at: datetime | None = Field(
        default=None, description="When it was last saved; null: the defaults, never saved"
    )


# The fields a config is made of (not its id, owner or timestamps).
CONFIG_FIELDS = tuple(AutomationConfigBase.model_fields)


def load_automation_config(conn: Connection, site_id: int) -> AutomationConfigBase:
    """The site's saved config, or the defaults when it has none (never an error)."""
    table = AutomationConfig.__table__
    row = conn.execute(select(table).where(table.c.site_id == site_id)).mappings().first()
    if row is None:
        return AutomationConfigBase()
    return AutomationConfigBase.model_validate({name: row[name] for name in CONFIG_FIELDS})
