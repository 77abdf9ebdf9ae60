"""Seed data: model prices every install needs, and a demo account to try igny8 with.

Idempotent: running it twice changes nothing and creates no duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from domain.accounts import add_api_key, create_account
from models import (
    Account,
    AIModelConfig,
    BillingConfiguration,
    Content,
    Image,
    Keyword,
    Sector,
    Site,
    Task,
)

# Public list prices (USD) at the time of writing; credits are what igny8 bills.
MODEL_CONFIGS: list[dict[str, object]] = [
    {
        "model_name": "gpt-4o-mini",
        "display_name": "GPT-4o mini",
        "provider": "openai",
        "model_type": "text",
        "cost_per_1k_input": Decimal("0.00015"),
        "cost_per_1k_output": Decimal("0.0006"),
        "tokens_per_credit": 1000,
        "credits_per_image": 0,
        "max_concurrency": 20,
        "is_default": True,
    },
    {
        "model_name": "gpt-4.1",
        "display_name": "GPT-4.1",
        "provider": "openai",
        "model_type": "text",
        "cost_per_1k_input": Decimal("0.002"),
        "cost_per_1k_output": Decimal("0.008"),
        "tokens_per_credit": 250,
        "credits_per_image": 0,
        "max_concurrency": 10,
    },
    {
        "model_name": "gpt-image-1",
        "display_name": "GPT Image 1 (1024², medium)",
        "provider": "openai",
        "model_type": "image",
        "cost_per_image": Decimal("0.042"),
        "credits_per_image": 5,
        "max_concurrency": 5,
        "is_default": True,
    },
    {
        "model_name": "dall-e-3",
        "display_name": "DALL·E 3 (1024², standard)",
        "provider": "openai",
        "model_type": "image",
        "cost_per_image": Decimal("0.04"),
        "credits_per_image": 4,
        "max_concurrency": 5,
    },
    {
        "model_name": "runware:101@1",
        "display_name": "FLUX.1 [dev] on Runware",
        "provider": "runware",
        "model_type": "image",
        "cost_per_image": Decimal("0.0038"),
        "credits_per_image": 1,
        "max_concurrency": 20,
    },
]

DEMO_ACCOUNT = "Demo Publisher"
DEMO_CREDITS = 2000
DEMO_KEYWORDS = [
    "pour over coffee",
    "pour over coffee ratio",
    "best pour over coffee maker",
    "french press coffee",
    "french press ratio",
    "how to use a french press",
    "cold brew coffee",
    "cold brew concentrate",
    "cold brew ratio",
    "espresso at home",
    "espresso machine for beginners",
    "espresso grind size",
    "coffee grinder burr vs blade",
    "best coffee grinder",
    "coffee beans storage",
    "light roast vs dark roast",
    "arabica vs robusta",
    "decaf coffee process",
    "latte art basics",
    "milk frothing tips",
]
DEMO_ARTICLES = [
    (
        "The Complete Guide to Pour Over Coffee",
        ["Choosing a dripper", "The right grind", "Water temperature", "Brewing step by step"],
    ),
    (
        "Cold Brew at Home: Ratios, Time and Taste",
        ["What cold brew is", "The best ratio", "Steeping time", "Storing concentrate"],
    ),
    (
        "Espresso for Beginners",
        ["Machines compared", "Dialing in the grind", "Tamping", "Milk drinks"],
    ),
]


@dataclass(frozen=True)
class DemoSeed:
    account_id: int
    site_id: int
    task_ids: list[int]
    api_key: str | None  # only when a new key was made (keys are stored hashed)


def seed_models(engine: Engine) -> int:
    """Insert the model price list and the billing configuration if missing."""
    created = 0
    with Session(engine) as session:
        existing = set(session.exec(select(AIModelConfig.model_name)).scalars().all())
        for cfg in MODEL_CONFIGS:
            if cfg["model_name"] not in existing:
                session.add(AIModelConfig.model_validate(cfg))
                created += 1
        if session.exec(select(BillingConfiguration.id)).first() is None:
            session.add(BillingConfiguration())
        session.commit()
    return created


def _article_html(title: str, sections: list[str]) -> str:
    parts = [f"<p>{title} explained simply, with the steps that matter.</p>"]
    for heading in sections:
        parts.append(f"<h2>{heading}</h2><p>{heading} in practice: what to do and why.</p>")
    return "".join(parts)


def seed_demo(engine: Engine, want_key: bool = True) -> DemoSeed:
    """A demo account with credits, a site with sectors, keywords and three drafted
    articles ready for images. Returns a new API key only if one was needed."""
    seed_models(engine)
    with Session(engine) as session:
        acct = session.exec(select(Account).where(Account.name == DEMO_ACCOUNT)).scalars().first()
    api_key: str | None = None
    if acct is None:
        created = create_account(engine, DEMO_ACCOUNT, DEMO_CREDITS)
        account_id, api_key = created.id, created.api_key
    else:
        account_id = acct.id
        if want_key:
            api_key = add_api_key(engine, account_id, name="demo")
    site_id, task_ids = _seed_site(engine, account_id)
    return DemoSeed(account_id, site_id, task_ids, api_key)


def demo_tasks_needing_images(engine: Engine, site_id: int) -> list[int]:
    """Demo tasks with content but no featured image yet; if every article is already
    illustrated, a new round of articles is drafted so each demo shows images being made."""
    with Session(engine, expire_on_commit=False) as session:
        site = session.get(Site, site_id)
        assert site is not None
        illustrated = select(Image.task_id).where(
            Image.site_id == site_id, Image.image_type == "featured", Image.status == "generated"
        )
        todo = (
            session.exec(
                select(Content.task_id).where(
                    Content.site_id == site_id, Content.task_id.not_in(illustrated)
                )
            )
            .scalars()
            .all()
        )
        if todo:
            return sorted(todo)
        round_no = (
            session.exec(
                select(func.count()).select_from(Task).where(Task.site_id == site_id)
            ).scalar_one()
            // len(DEMO_ARTICLES)
            + 1
        )
        ids = []
        for title, sections in DEMO_ARTICLES:
            task = Task(
                account_id=site.account_id,
                site_id=site_id,
                title=f"{title} (part {round_no})",
                status="completed",
            )
            session.add(task)
            session.flush()
            session.add(
                Content(
                    account_id=site.account_id,
                    site_id=site_id,
                    task_id=task.id,
                    title=task.title,
                    html=_article_html(task.title, sections),
                    word_count=120,
                )
            )
            ids.append(task.id)
        session.commit()
        return ids


def _seed_site(engine: Engine, account_id: int) -> tuple[int, list[int]]:
    with Session(engine, expire_on_commit=False) as session:
        site = session.exec(select(Site).where(Site.account_id == account_id)).scalars().first()
        if site is None:
            site = Site(
                account_id=account_id,
                name="Demo Coffee Blog",
                url="https://coffee.example.com",
                max_in_article_images=2,
                image_model="runware:101@1",
            )
            session.add(site)
            session.flush()
            for name in ("Brewing", "Equipment"):
                session.add(Sector(account_id=account_id, site_id=site.id, name=name))
            for kw in DEMO_KEYWORDS:
                session.add(Keyword(account_id=account_id, site_id=site.id, keyword=kw))
            for title, sections in DEMO_ARTICLES:
                task = Task(account_id=account_id, site_id=site.id, title=title, status="completed")
                session.add(task)
                session.flush()
                session.add(
                    Content(
                        account_id=account_id,
                        site_id=site.id,
                        task_id=task.id,
                        title=title,
                        html=_article_html(title, sections),
                        word_count=120,
                    )
                )
            session.commit()
        task_ids = (
            session.exec(select(Task.id).where(Task.site_id == site.id).order_by(Task.id))
            .scalars()
            .all()
        )
        return site.id, list(task_ids)
