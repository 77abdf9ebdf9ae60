"""Tables of the run engine: provider-wide concurrency slots, per-model back-off, and one
record per metered AI call (what makes a retried call idempotent)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.common import created_at_field, dt_field, json_field, usd_field


class ProviderSlot(SQLModel, table=True):
    """One of a model's `max_concurrency` slots. A call holds a slot while it is at the
    provider; the lease expires if its worker dies, so no slot is ever stranded."""

    __tablename__ = "igny8_provider_slots"
    __table_args__ = (UniqueConstraint("model_name", "slot_no", name="uq_provider_slot"),)

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(max_length=100, index=True, nullable=False)
    slot_no: int = Field(nullable=False)
    holder: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = dt_field()


class ProviderBackoff(SQLModel, table=True):
    """A 429's Retry-After, for every caller of the model: no call starts before it."""

    __tablename__ = "igny8_provider_backoffs"

    model_name: str = Field(max_length=100, primary_key=True)
    blocked_until: datetime | None = dt_field()


class AICall(SQLModel, table=True):
    """One metered text AI call's outcome, written with its result in one transaction:
    a retried activity finds it and answers without calling the provider again."""

    __tablename__ = "igny8_ai_calls"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    idempotency_key: str = Field(max_length=255, unique=True, nullable=False)
    function_name: str = Field(max_length=50, index=True, nullable=False)
    workflow_id: str | None = Field(default=None, max_length=255, index=True)
    item_type: str = Field(max_length=30, nullable=False)
    item_id: int = Field(nullable=False)
    model_name: str | None = Field(default=None, max_length=100)
    status: str = Field(default="done", max_length=20, nullable=False)
    tokens_input: int = 0
    tokens_output: int = 0
    credits: int = 0
    cost_usd: Decimal = usd_field()
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    details: dict[str, Any] = json_field()
    created_at: datetime = created_at_field()


class RunStop(SQLModel, table=True):
    """A paused or cancelled run, as the workers see it: a call of that run still waiting
    for a provider slot gives up its turn instead of calling the provider."""

    __tablename__ = "igny8_run_stops"

    workflow_id: str = Field(max_length=255, primary_key=True)
    stopped: bool = Field(default=True, nullable=False)
    updated_at: datetime = created_at_field()
