"""Request and response bodies the API needs beyond the `XPublic` families in `models/`.

Input models here subclass the `models/` ones to add the bounds the database imposes
(32-bit integers on PostgreSQL, NUMERIC(14, 6) for USD) and the closed vocabularies
(provider, model type), so a bad value is a 422 at the door instead of a 500 later.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
)
from sqlmodel import SQLModel

from models import AccountCreate, AIModelConfigCreate, AIModelConfigUpdate, KeywordIn

INT32_MAX = 2**31 - 1
MAX_CREDITS_PER_CHANGE = 1_000_000_000
MAX_KEYWORDS_PER_IMPORT = 10_000

Provider = Literal["openai", "runware"]
ModelKind = Literal["text", "image"]
UsdIn = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=6)]


class ErrorMessage(BaseModel):
    """Every non-422 error body."""

    detail: str


# ---- health ----------------------------------------------------------------------
class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    database: str = Field(description='"ok" or "error: <reason>"')
    temporal: Literal["ok", "unavailable"]


class LivenessPublic(BaseModel):
    status: Literal["ok"]


# ---- admin -----------------------------------------------------------------------
class AccountCreateIn(AccountCreate):
    """`AccountCreate` with a non-blank name and an opening balance the ledger can hold."""

    credits: int = Field(default=0, ge=0, le=MAX_CREDITS_PER_CHANGE)

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("name must not contain control characters")
        return value.strip()


class TopUpRequest(BaseModel):
    amount: int = Field(gt=0, le=MAX_CREDITS_PER_CHANGE, strict=True)
    description: str = Field(default="Credit purchase", max_length=500)
    idempotency_key: str = Field(
        min_length=1,
        max_length=255,
        description="Unique per purchase (a payment id): a replay credits once",
    )


class TopUpResult(BaseModel):
    transaction_id: int
    amount: int
    balance_after: int
    replayed: bool


class AIModelConfigIn(AIModelConfigCreate):
    provider: Provider = "openai"
    model_type: ModelKind = "text"
    cost_per_1k_input: UsdIn = Decimal("0")
    cost_per_1k_output: UsdIn = Decimal("0")
    cost_per_image: UsdIn = Decimal("0")
    credits_per_image: int = Field(default=1, ge=0, le=INT32_MAX)
    tokens_per_credit: int = Field(default=1000, ge=1, le=INT32_MAX)
    max_concurrency: int = Field(default=5, ge=1, le=10_000)


class AIModelConfigPatch(AIModelConfigUpdate):
    display_name: str | None = Field(default=None, max_length=200)
    provider: Provider | None = None
    cost_per_1k_input: UsdIn | None = None
    cost_per_1k_output: UsdIn | None = None
    cost_per_image: UsdIn | None = None
    credits_per_image: int | None = Field(default=None, ge=0, le=INT32_MAX)
    tokens_per_credit: int | None = Field(default=None, ge=1, le=INT32_MAX)
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)


# ---- credits ---------------------------------------------------------------------
class BalancePublic(BaseModel):
    credits: int = Field(description="The balance")
    reserved: int = Field(description="Held by running work")
    available: int = Field(description="credits − reserved: what new work can use")


# ---- keywords --------------------------------------------------------------------
class KeywordItem(KeywordIn):
    volume: int = Field(default=0, ge=0, le=INT32_MAX)
    sector_id: int | None = Field(default=None, ge=1, le=INT32_MAX)


def _keyword_kind(value: Any) -> str:
    return "string" if isinstance(value, str) else "object"


# A plain string or an object; the discriminator gives one clear error per bad entry
# instead of one per union member. Lengths are checked after normalisation, per row.
KeywordEntry = Annotated[
    Annotated[KeywordItem, Tag("object")]
    | Annotated[Annotated[str, StringConstraints(max_length=1000)], Tag("string")],
    Discriminator(_keyword_kind),
]


class KeywordImport(BaseModel):
    """JSON import: objects with metrics, or plain strings, mixed as you like."""

    keywords: list[KeywordEntry] = Field(min_length=1, max_length=MAX_KEYWORDS_PER_IMPORT)
    sector_id: int | None = Field(
        default=None, ge=1, le=INT32_MAX, description="Default sector for every keyword"
    )


class InvalidRow(BaseModel):
    row: int = Field(description="CSV: line number (header = 1); JSON: position from 1")
    error: str


class KeywordImportResult(BaseModel):
    created: int
    duplicates: list[str] = Field(description="Normalised keywords skipped as duplicates")
    invalid: list[InvalidRow]


# ---- pipeline reads --------------------------------------------------------------
class ClusterPublic(SQLModel):
    id: int
    site_id: int
    sector_id: int | None
    name: str
    description: str
    keywords_count: int
    status: str
    created_at: datetime


class ContentIdeaPublic(SQLModel):
    id: int
    site_id: int
    sector_id: int | None
    cluster_id: int | None
    title: str
    description: str
    content_type: str
    content_structure: str
    target_keywords: list[str]
    status: str
    created_at: datetime


class TaskPublic(SQLModel):
    id: int
    site_id: int
    sector_id: int | None
    cluster_id: int | None
    idea_id: int | None
    title: str
    keywords: list[str]
    status: str
    created_at: datetime


class ContentSummary(SQLModel):
    """Content in lists: everything but the (large) html."""

    id: int
    site_id: int
    sector_id: int | None
    task_id: int
    title: str
    meta_description: str
    word_count: int
    status: str
    site_status: str
    scheduled_publish_at: datetime | None
    published_at: datetime | None
    external_id: str | None
    external_url: str | None
    created_at: datetime
    updated_at: datetime


class ContentPublic(ContentSummary):
    html: str


class ImagePublic(SQLModel):
    id: int
    site_id: int
    task_id: int
    content_id: int | None
    image_type: str
    position: int
    prompt: str
    status: str
    model_name: str | None
    file_path: str | None
    mime_type: str | None
    size_bytes: int | None
    error: str | None
    cost_usd: Decimal
    credits_used: int
    batch_id: str | None
    created_at: datetime
    updated_at: datetime


# Models used only in hand-written OpenAPI (the keyword import body), added to components.
OPENAPI_EXTRA_MODELS: tuple[type[BaseModel], ...] = (KeywordImport,)
