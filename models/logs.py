"""AI task logs and notifications: what users read after every AI call."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from models.common import created_at_field, json_field, usd_field

TASK_PHASES = ("INIT", "PREP", "AI_CALL", "SAVE", "DONE")
TASK_STATUSES = ("pending", "running", "success", "error", "cancelled")


class AITaskLog(SQLModel, table=True):
    """One row per AI function execution: INIT → DONE (success), error, or cancelled."""

    __tablename__ = "igny8_ai_task_logs"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    function_name: str = Field(max_length=50, index=True, nullable=False)
    phase: str = Field(default="INIT", max_length=20, nullable=False)
    status: str = Field(default="pending", max_length=20, nullable=False, index=True)
    model_name: str | None = Field(default=None, max_length=100)
    cost: Decimal = usd_field()
    credits_used: int = 0
    payload: dict[str, Any] = json_field()
    result: dict[str, Any] = json_field()
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    idempotency_key: str = Field(max_length=255, unique=True, nullable=False)
    workflow_id: str | None = Field(default=None, max_length=255, index=True)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()


class AITaskLogPublic(SQLModel):
    id: int
    function_name: str
    phase: str
    status: str
    model_name: str | None
    cost: Decimal
    credits_used: int
    payload: dict[str, Any]
    result: dict[str, Any]
    error: str | None
    workflow_id: str | None
    created_at: datetime
    updated_at: datetime


class Notification(SQLModel, table=True):
    __tablename__ = "igny8_notifications_notification"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    notification_type: str = Field(max_length=50, index=True, nullable=False)
    title: str = Field(default="", max_length=255)
    message: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    severity: str = Field(default="info", max_length=20)
    details: dict[str, Any] = json_field()
    related_object_type: str | None = Field(default=None, max_length=50)
    related_object_id: int | None = None
    ai_task_log_id: int | None = Field(
        default=None, foreign_key="igny8_ai_task_logs.id", index=True
    )
    is_read: bool = Field(default=False, nullable=False)
    idempotency_key: str = Field(max_length=255, unique=True, nullable=False)
    created_at: datetime = created_at_field()


class NotificationPublic(SQLModel):
    id: int
    notification_type: str
    title: str
    message: str
    severity: str
    details: dict[str, Any]
    related_object_type: str | None
    related_object_id: int | None
    is_read: bool
    created_at: datetime
