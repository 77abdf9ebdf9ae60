"""Builders for test data: short calls that make valid rows with sensible defaults."""

from __future__ import annotations

import dataclasses
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.testing import ActivityEnvironment

from activities.images import GenerateImageInput, ImageActivities
from domain.accounts import create_account
from domain.ledger import Ledger
from domain.pricing import ModelPricing
from models import AIModelConfig, BillingConfiguration, Content, Image, Sector, Site, Task
from models.pipeline import Cluster, ContentIdea, Keyword
from providers.media_store import LocalMediaStore
from worker import build_gate


def account(engine: Engine, credits: int = 100, name: str | None = None) -> tuple[int, str]:
    """A new account with `credits` booked as a purchase; returns (id, api key)."""
    created = create_account(engine, name or f"acct-{secrets.token_hex(3)}", credits)
    return created.id, created.api_key


def model_config(engine: Engine, **overrides: Any) -> AIModelConfig:
    fields: dict[str, Any] = {
        "model_name": "test-image-model",
        "provider": "openai",
        "model_type": "image",
        "cost_per_image": Decimal("0.040000"),
        "credits_per_image": 2,
        "max_concurrency": 10,
    }
    fields.update(overrides)
    with Session(engine, expire_on_commit=False) as session:
        cfg = AIModelConfig(**fields)
        session.add(cfg)
        session.commit()
        return cfg


def text_model_config(engine: Engine, **overrides: Any) -> AIModelConfig:
    """A text model priced so a call costs several credits (100 tokens a credit)."""
    fields: dict[str, Any] = {
        "model_name": "test-text-model",
        "provider": "openai",
        "model_type": "text",
        "cost_per_1k_input": Decimal("0.000150"),
        "cost_per_1k_output": Decimal("0.000600"),
        "tokens_per_credit": 100,
        "max_concurrency": 5,
    }
    fields.update(overrides)
    return model_config(engine, **fields)


def pricing_of(cfg: AIModelConfig) -> ModelPricing:
    return ModelPricing.from_config(cfg)


def top_up(engine: Engine, account_id: int, amount: int) -> None:
    Ledger(engine).top_up(account_id, amount, f"test-top-up-{secrets.token_hex(4)}")


def balance(engine: Engine, account_id: int) -> int:
    return Ledger(engine).balance(account_id).credits


def billing_config(engine: Engine, price: str = "0.01") -> None:
    with Session(engine) as session:
        session.add(BillingConfiguration(default_credit_price_usd=Decimal(price)))
        session.commit()


def site(engine: Engine, account_id: int, **overrides: Any) -> Site:
    with Session(engine, expire_on_commit=False) as session:
        row = Site(account_id=account_id, name=overrides.pop("name", "Test site"), **overrides)
        session.add(row)
        session.flush()
        session.add(Sector(account_id=account_id, site_id=row.id, name="General"))
        session.commit()
        return row


def task_with_content(
    engine: Engine, account_id: int, site_id: int, title: str = "How to brew coffee"
) -> tuple[Task, Content]:
    with Session(engine, expire_on_commit=False) as session:
        task = Task(account_id=account_id, site_id=site_id, title=title, keywords=["coffee"])
        session.add(task)
        session.flush()
        content = Content(
            account_id=account_id,
            site_id=site_id,
            task_id=task.id,
            title=title,
            html=f"<h2>{title}</h2><p>Body.</p>",
            word_count=2,
        )
        session.add(content)
        session.commit()
        return task, content


def keywords(engine: Engine, account_id: int, site_id: int, words: list[str]) -> list[Keyword]:
    """New, unclustered keywords, in the given order of search volume (highest first)."""
    with Session(engine, expire_on_commit=False) as session:
        rows = [
            Keyword(account_id=account_id, site_id=site_id, keyword=w, volume=1000 - 10 * i)
            for i, w in enumerate(words)
        ]
        session.add_all(rows)
        session.commit()
        return rows


def cluster(
    engine: Engine, account_id: int, site_id: int, name: str, words: list[str]
) -> tuple[Cluster, list[Keyword]]:
    """A cluster waiting for ideas, with its keywords (new ones, linked and counted)."""
    members = keywords(engine, account_id, site_id, words)
    with Session(engine, expire_on_commit=False) as session:
        row = Cluster(
            account_id=account_id,
            site_id=site_id,
            name=name,
            description=f"People researching {name.lower()}.",
            keywords_count=len(members),
        )
        session.add(row)
        session.flush()
        for keyword in members:
            keyword.cluster_id, keyword.status = row.id, "clustered"
            session.add(keyword)
        session.commit()
        return row, members


def writer_task(
    engine: Engine,
    account_id: int,
    site_id: int,
    title: str,
    words: list[str],
    outline: str = "",
    cluster_id: int | None = None,
) -> Task:
    """A queued writer task made from an idea (its title, keywords and outline)."""
    with Session(engine, expire_on_commit=False) as session:
        idea = ContentIdea(
            account_id=account_id,
            site_id=site_id,
            cluster_id=cluster_id,
            title=title,
            description=outline,
            content_structure="guide",
            target_keywords=words,
            status="queued",
        )
        session.add(idea)
        session.flush()
        task = Task(
            account_id=account_id,
            site_id=site_id,
            cluster_id=cluster_id,
            idea_id=idea.id,
            title=title,
            keywords=words,
        )
        session.add(task)
        session.commit()
        return task


def pending_image(engine: Engine, prompt: str = "a cup of coffee") -> tuple[int, Image]:
    """An account with one task (with content) and one pending image row for it."""
    acct, _ = account(engine, credits=10)
    row_site = site(engine, acct)
    task, _ = task_with_content(engine, acct, row_site.id, "Coffee")
    with Session(engine, expire_on_commit=False) as session:
        image = Image(account_id=acct, site_id=row_site.id, task_id=task.id, prompt=prompt)
        session.add(image)
        session.commit()
        return acct, image


def generate_input(account_id: int, image: Image, **overrides: Any) -> GenerateImageInput:
    fields: dict[str, Any] = {
        "batch_id": "image-batch-1-abc",
        "account_id": account_id,
        "image_id": image.id,
        "model_name": "gpt-image-1",
        "provider": "openai",
        "prompt": image.prompt,
        "cost_per_image": Decimal("0.04"),
        "credits_per_image": 1,
    }
    fields.update(overrides)
    return GenerateImageInput(**fields)


def image_activities(engine: Engine, providers: Any, media_dir: Path) -> ImageActivities:
    """Image activities on a local media folder, with this process's provider gate."""
    return ImageActivities(
        engine, providers, LocalMediaStore(media_dir), build_gate(engine, None), None
    )


def image_keys(engine: Engine) -> list[str]:
    """The media-store keys of every generated image."""
    with Session(engine) as session:
        rows = session.exec(select(Image.file_path).where(Image.status == "generated")).all()
        return [r for r in rows if r]


def activity_env(attempt: int = 1) -> ActivityEnvironment:
    """An activity environment whose info says this is the given attempt."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env
