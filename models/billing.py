"""Billing tables: model prices, the credit ledger, usage logs and holds.

Table and column names are fixed by the operator SQL in DESIGN §6.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import BigInteger, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.common import created_at_field, dt_field, json_field, usd_field

ModelType = Literal["text", "image"]
TransactionType = Literal["purchase", "deduction", "refund", "adjustment"]


class AIModelConfigBase(SQLModel):
    model_name: str = Field(max_length=100, min_length=1)
    display_name: str = Field(default="", max_length=200)
    provider: str = Field(default="openai", max_length=50, description="openai or runware")
    model_type: str = Field(default="text", max_length=10, description="text or image")
    cost_per_1k_input: Decimal = usd_field()
    cost_per_1k_output: Decimal = usd_field()
    cost_per_image: Decimal = usd_field()
    credits_per_image: int = Field(default=1, ge=0)
    tokens_per_credit: int = Field(default=1000, ge=1)
    max_concurrency: int = Field(default=5, ge=1)
    is_active: bool = True
    is_default: bool = False


class AIModelConfigCreate(AIModelConfigBase):
    pass


class AIModelConfigUpdate(SQLModel):
    display_name: str | None = None
    provider: str | None = None
    cost_per_1k_input: Decimal | None = Field(default=None, ge=0)
    cost_per_1k_output: Decimal | None = Field(default=None, ge=0)
    cost_per_image: Decimal | None = Field(default=None, ge=0)
    credits_per_image: int | None = Field(default=None, ge=0)
    tokens_per_credit: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    is_active: bool | None = None
    is_default: bool | None = None


class AIModelConfig(AIModelConfigBase, table=True):
    __tablename__ = "igny8_billing_aimodelconfig"

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(max_length=100, unique=True, nullable=False)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()


class AIModelConfigPublic(AIModelConfigBase):
    id: int


class BillingConfiguration(SQLModel, table=True):
    """A single row: the credit price and the default models."""

    __tablename__ = "igny8_billing_billingconfiguration"

    id: int | None = Field(default=None, primary_key=True)
    default_credit_price_usd: Decimal = usd_field("0.01")
    default_text_model: str = Field(default="gpt-4o-mini", max_length=100)
    default_image_model: str = Field(default="gpt-image-1", max_length=100)
    updated_at: datetime = created_at_field()


class CreditTransaction(SQLModel, table=True):
    """One signed change of an account's balance; the ledger's source of truth."""

    __tablename__ = "igny8_billing_credittransaction"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    amount: int = Field(nullable=False, sa_type=BigInteger)
    balance_after: int = Field(nullable=False, sa_type=BigInteger)
    transaction_type: str = Field(max_length=20, nullable=False, index=True)
    operation_type: str | None = Field(default=None, max_length=50)
    description: str = Field(default="", max_length=500)
    idempotency_key: str = Field(max_length=255, unique=True, nullable=False)
    reservation_id: int | None = Field(
        default=None, foreign_key="igny8_billing_creditreservation.id"
    )
    details: dict[str, Any] = json_field()
    created_at: datetime = created_at_field()


class CreditTransactionPublic(SQLModel):
    id: int
    amount: int
    balance_after: int
    transaction_type: str
    operation_type: str | None
    description: str
    idempotency_key: str
    created_at: datetime


class CreditUsageLog(SQLModel, table=True):
    """What a deduction paid for, with its USD cost; written with the deduction."""

    __tablename__ = "igny8_billing_creditusagelog"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    transaction_id: int = Field(
        foreign_key="igny8_billing_credittransaction.id", unique=True, nullable=False
    )
    operation_type: str = Field(max_length=50, nullable=False, index=True)
    credits_used: int = Field(nullable=False, sa_type=BigInteger)
    cost_usd: Decimal = usd_field()
    billed_usd: Decimal = usd_field()
    model_name: str | None = Field(default=None, max_length=100)
    tokens_input: int = 0
    tokens_output: int = 0
    related_object_type: str | None = Field(default=None, max_length=50)
    related_object_id: int | None = None
    ai_task_log_id: int | None = Field(
        default=None, foreign_key="igny8_ai_task_logs.id", index=True
    )
    details: dict[str, Any] = json_field()
    created_at: datetime = created_at_field()


class CreditUsageLogPublic(SQLModel):
    id: int
    transaction_id: int
    operation_type: str
    credits_used: int
    cost_usd: Decimal
    billed_usd: Decimal
    model_name: str | None
    tokens_input: int
    tokens_output: int
    related_object_type: str | None
    related_object_id: int | None
    ai_task_log_id: int | None
    created_at: datetime


class CreditReservation(SQLModel, table=True):
    """A hold on credits: available = balance − open holds' remaining amounts."""

    __tablename__ = "igny8_billing_creditreservation"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_reservation_key"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    amount: int = Field(nullable=False, sa_type=BigInteger, description="Credits held in total")
    consumed: int = Field(
        default=0, nullable=False, sa_type=BigInteger, description="Taken by deductions"
    )
    released: int = Field(
        default=0, nullable=False, sa_type=BigInteger, description="Given back on close"
    )
    status: str = Field(default="open", max_length=10, index=True, description="open, closed")
    operation_type: str | None = Field(default=None, max_length=50)
    idempotency_key: str = Field(max_length=255, nullable=False)
    workflow_id: str | None = Field(default=None, max_length=255)
    expires_at: datetime = dt_field(nullable=False, index=True)
    created_at: datetime = created_at_field()
    closed_at: datetime | None = dt_field()

    @property
    def remaining(self) -> int:
        return self.amount - self.consumed - self.released if self.status == "open" else 0
