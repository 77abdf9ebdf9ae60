"""Automation runs, image batches and the WordPress connection."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from models.common import created_at_field, dt_field, json_field, usd_field


class AutomationRun(SQLModel, table=True):
    __tablename__ = "igny8_automation_runs"
    __table_args__ = (UniqueConstraint("active_site_id", name="uq_automation_run_active_site"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=255, unique=True, nullable=False)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    site_id: int = Field(foreign_key="igny8_sites.id", index=True, nullable=False)
    # The site while the run is active, NULL after: unique, so one active run per site.
    active_site_id: int | None = Field(default=None)
    status: str = Field(default="running", max_length=20, index=True)
    pause_reason: str | None = Field(default=None, max_length=50)
    current_stage: str | None = Field(default=None, max_length=50)
    budget_credits: int | None = None
    credits_used: int = 0
    cost_usd: Decimal = usd_field()
    summary: dict[str, Any] = json_field()
    started_at: datetime = created_at_field()
    finished_at: datetime | None = dt_field()


class ImageBatch(SQLModel, table=True):
    """Ownership and the last known state of an image batch workflow."""

    __tablename__ = "igny8_image_batches"

    id: int | None = Field(default=None, primary_key=True)
    batch_id: str = Field(max_length=255, unique=True, nullable=False)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    site_id: int | None = Field(default=None, foreign_key="igny8_sites.id")
    run_id: str | None = Field(default=None, max_length=255)
    model_name: str | None = Field(default=None, max_length=100)
    status: str = Field(default="running", max_length=20, index=True)
    images_total: int = 0
    images_done: int = 0
    images_failed: int = 0
    credits_used: int = 0
    cost_usd: Decimal = usd_field()
    task_ids: list[int] = json_field(list)
    errors: list[str] = json_field(list)
    created_at: datetime = created_at_field()
    finished_at: datetime | None = dt_field()


class WordPressIntegration(SQLModel, table=True):
    __tablename__ = "igny8_wordpress_integrations"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    site_id: int = Field(foreign_key="igny8_sites.id", unique=True, nullable=False)
    base_url: str = Field(max_length=500)
    username: str = Field(max_length=200)
    password_encrypted: str = Field(max_length=2000, description="Fernet token; write-only")
    is_active: bool = True
    last_tested_at: datetime | None = dt_field()
    last_test_ok: bool | None = None
    created_at: datetime = created_at_field()
