"""The pipeline's data: keywords → clusters → ideas → tasks → content → images."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.common import created_at_field, dt_field, json_field, usd_field

CONTENT_STATUSES = ("draft", "review", "approved")
SITE_STATUSES = ("not_published", "scheduled", "publishing", "published", "failed")


class KeywordIn(SQLModel):
    keyword: str = Field(min_length=1, max_length=255)
    volume: int = Field(default=0, ge=0)
    difficulty: int = Field(default=0, ge=0, le=100)
    intent: str = Field(default="informational", max_length=30)
    sector_id: int | None = None


class Keyword(KeywordIn, table=True):
    __tablename__ = "igny8_keywords"
    __table_args__ = (UniqueConstraint("site_id", "keyword", name="uq_keyword_site"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    site_id: int = Field(foreign_key="igny8_sites.id", index=True, nullable=False)
    sector_id: int | None = Field(default=None, foreign_key="igny8_sectors.id")
    cluster_id: int | None = Field(default=None, foreign_key="igny8_clusters.id", index=True)
    status: str = Field(default="new", max_length=20, index=True)
    created_at: datetime = created_at_field()


class KeywordPublic(KeywordIn):
    id: int
    site_id: int
    cluster_id: int | None
    status: str
    created_at: datetime


class Cluster(SQLModel, table=True):
    __tablename__ = "igny8_clusters"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    site_id: int = Field(foreign_key="igny8_sites.id", index=True, nullable=False)
    sector_id: int | None = Field(default=None, foreign_key="igny8_sectors.id")
    name: str = Field(max_length=255)
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    keywords_count: int = 0
    status: str = Field(default="new", max_length=20, index=True)
    source_key: str | None = Field(default=None, max_length=255, unique=True)
    created_at: datetime = created_at_field()


class ContentIdea(SQLModel, table=True):
    __tablename__ = "igny8_content_ideas"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    site_id: int = Field(foreign_key="igny8_sites.id", index=True, nullable=False)
    sector_id: int | None = Field(default=None, foreign_key="igny8_sectors.id")
    cluster_id: int | None = Field(default=None, foreign_key="igny8_clusters.id", index=True)
    title: str = Field(max_length=500)
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    content_type: str = Field(default="post", max_length=30)
    content_structure: str = Field(default="article", max_length=30)
    target_keywords: list[str] = json_field(list)
    status: str = Field(default="new", max_length=20, index=True)
    source_key: str | None = Field(default=None, max_length=255, unique=True)
    created_at: datetime = created_at_field()


class Task(SQLModel, table=True):
    __tablename__ = "igny8_tasks"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    site_id: int = Field(foreign_key="igny8_sites.id", index=True, nullable=False)
    sector_id: int | None = Field(default=None, foreign_key="igny8_sectors.id")
    cluster_id: int | None = Field(default=None, foreign_key="igny8_clusters.id")
    idea_id: int | None = Field(default=None, foreign_key="igny8_content_ideas.id", unique=True)
    title: str = Field(max_length=500)
    keywords: list[str] = json_field(list)
    status: str = Field(default="queued", max_length=20, index=True)
    created_at: datetime = created_at_field()


class Content(SQLModel, table=True):
    __tablename__ = "igny8_content"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    site_id: int = Field(foreign_key="igny8_sites.id", index=True, nullable=False)
    sector_id: int | None = Field(default=None, foreign_key="igny8_sectors.id")
    task_id: int = Field(foreign_key="igny8_tasks.id", unique=True, nullable=False)
    title: str = Field(max_length=500)
    meta_title: str = Field(default="", max_length=200)
    meta_description: str = Field(default="", max_length=1000)
    slug: str = Field(default="", max_length=255)
    focus_keyword: str = Field(default="", max_length=255)
    target_keywords: list[str] = json_field(list)
    image_prompts: list[dict[str, str]] = json_field(list)
    html: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    word_count: int = 0
    status: str = Field(default="draft", max_length=20, index=True)
    site_status: str = Field(default="not_published", max_length=20, index=True)
    scheduled_publish_at: datetime | None = dt_field(index=True)
    published_at: datetime | None = dt_field()
    external_id: str | None = Field(default=None, max_length=100)
    external_url: str | None = Field(default=None, max_length=1000)
    publish_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()


class Image(SQLModel, table=True):
    """One planned or produced image. Unique per (task, type, position): planned once."""

    __tablename__ = "igny8_images"
    __table_args__ = (UniqueConstraint("task_id", "image_type", "position", name="uq_image_slot"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="igny8_accounts.id", index=True, nullable=False)
    site_id: int = Field(foreign_key="igny8_sites.id", index=True, nullable=False)
    task_id: int = Field(foreign_key="igny8_tasks.id", index=True, nullable=False)
    content_id: int | None = Field(default=None, foreign_key="igny8_content.id", index=True)
    image_type: str = Field(default="featured", max_length=20, description="featured, in_article")
    position: int = 0
    prompt: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    alt_text: str = Field(default="", max_length=500)
    status: str = Field(default="pending", max_length=20, index=True)
    model_name: str | None = Field(default=None, max_length=100)
    file_path: str | None = Field(default=None, max_length=1000)
    mime_type: str | None = Field(default=None, max_length=50)
    size_bytes: int | None = None
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    cost_usd: Decimal = usd_field()
    credits_used: int = 0
    batch_id: str | None = Field(default=None, max_length=255, index=True)
    # The WordPress media item once uploaded (stored before the post is made: DESIGN §8).
    external_media_id: int | None = None
    external_url: str | None = Field(default=None, max_length=1000)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
