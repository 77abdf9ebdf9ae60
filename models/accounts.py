"""Accounts (the credit balance lives here) and their hashed API keys."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel

from models.common import created_at_field, dt_field


class AccountBase(SQLModel):
    name: str = Field(min_length=1, max_length=200)


class AccountCreate(AccountBase):
    credits: int = Field(default=0, ge=0, description="Opening balance, booked as a purchase")


class Account(AccountBase, table=True):
    __tablename__ = "igny8_accounts"

    id: int | None = Field(default=None, primary_key=True)
    credits: int = Field(default=0, nullable=False, sa_type=BigInteger, description="The balance")
    credits_reserved: int = Field(
        default=0, nullable=False, sa_type=BigInteger, description="Sum of open holds"
    )
    is_active: bool = Field(default=True, nullable=False)
    created_at: datetime = created_at_field()


class AccountPublic(AccountBase):
    id: int
    credits: int
    created_at: datetime


class AccountCreated(BaseModel):
    id: int
    name: str
    credits: int
    api_key: str


class ApiKey(SQLModel, table=True):
    __tablename__ = "igny8_api_keys"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    key_hash: str = Field(max_length=128, unique=True, nullable=False)
    key_prefix: str = Field(max_length=16, nullable=False)
    name: str = Field(default="default", max_length=100)
    is_active: bool = Field(default=True, nullable=False)
    created_at: datetime = created_at_field()
    last_used_at: datetime | None = dt_field()
