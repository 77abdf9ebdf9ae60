"""Column helpers shared by every table."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Column, Numeric
from sqlmodel import Field

from models.db import UTCDateTime, utcnow


def created_at_field() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


def dt_field(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def usd_field(default: str = "0", nullable: bool = False) -> Any:
    """USD amounts: exact decimals, 6 places (a gpt-4o-mini token costs $0.00000015)."""
    return Field(
        default=Decimal(default) if default is not None else None,
        sa_column_kwargs={"nullable": nullable},
        sa_type=Numeric(14, 6, asdecimal=True),
    )


def json_field(default_factory: Any = dict) -> Any:
    return Field(default_factory=default_factory, sa_column=Column(JSON, nullable=False))


__all__ = ["created_at_field", "datetime", "dt_field", "json_field", "usd_field"]
