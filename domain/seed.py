"""Seed data: model prices every install needs, and a demo account to try igny8 with.

Idempotent: running it twice changes nothing and creates no duplicates. The demo site
gets a niche's worth of keywords (coffee at home) for `igny8 demo` / `make run` to take
through a whole automation run; `prepare_demo_run` keeps later demos supplied.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from domain.accounts import add_api_key, create_account
from domain.ledger import IdempotencyConflict, Ledger
from models import (
    Account,
    AIModelConfig,
    BillingConfiguration,
    Content,
    Keyword,
    Sector,
    Site,
    Task,
)
from models.runs import AutomationRun

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
# What one demo automation run costs, measured on the simulator (`igny8 demo`): the 36
# keywords below make 2 clustering calls, 17 clusters and 38 articles with 3 images each,
# 288 credits (an article's content 3, its prompts 1, an image 1 on the demo's Runware
# model). The same run with gpt-image-1 (5 credits an image) would take ~750.
DEMO_RUN_CREDITS = 1000  # the demo tops the account up to this before a run, if below
DEMO_CREDITS = 2000  # a new demo account's opening balance: several demo runs
# (keyword, monthly searches, difficulty 0-100, sector): one niche, coffee at home, in
# topics of two to six keywords, so clustering has real groups to find.
DEMO_KEYWORDS: list[tuple[str, int, int, str]] = [
    ("pour over coffee", 8100, 38, "Brewing"),
    ("pour over coffee ratio", 2400, 22, "Brewing"),
    ("best pour over coffee maker", 2900, 46, "Equipment"),
    ("gooseneck kettle for pour over", 1300, 32, "Equipment"),
    ("french press coffee", 14800, 41, "Brewing"),
    ("french press ratio", 3600, 20, "Brewing"),
    ("how to use a french press", 6600, 30, "Brewing"),
    ("aeropress vs french press", 1900, 26, "Brewing"),
    ("aeropress recipe", 6600, 33, "Brewing"),
    ("cold brew coffee", 40500, 52, "Brewing"),
    ("cold brew concentrate", 9900, 35, "Brewing"),
    ("cold brew ratio", 5400, 24, "Brewing"),
    ("how long to steep cold brew", 2900, 18, "Brewing"),
    ("espresso at home", 4400, 44, "Brewing"),
    ("espresso machine for beginners", 3600, 48, "Equipment"),
    ("espresso grind size", 1900, 27, "Brewing"),
    ("how to dial in espresso", 1600, 29, "Brewing"),
    ("how to descale an espresso machine", 3600, 29, "Equipment"),
    ("moka pot vs espresso", 1900, 25, "Equipment"),
    ("coffee grinder burr vs blade", 1900, 27, "Equipment"),
    ("best coffee grinder", 14800, 58, "Equipment"),
    ("best burr grinder under 100", 1000, 35, "Equipment"),
    ("best coffee scale", 1600, 37, "Equipment"),
    ("coffee to water ratio", 12100, 31, "Brewing"),
    ("best water temperature for coffee", 2400, 19, "Brewing"),
    ("coffee beans storage", 1600, 20, "Brewing"),
    ("how long do coffee beans last", 4400, 22, "Brewing"),
    ("light roast vs dark roast", 6600, 28, "Brewing"),
    ("arabica vs robusta", 8100, 30, "Brewing"),
    ("single origin vs blend coffee", 720, 18, "Brewing"),
    ("decaf coffee process", 1300, 24, "Brewing"),
    ("latte art basics", 1000, 21, "Brewing"),
    ("milk frothing tips", 880, 17, "Brewing"),
    ("how to froth milk without a frother", 5400, 23, "Brewing"),
    ("how to clean a coffee maker with vinegar", 9900, 26, "Equipment"),
    ("coffee maker cleaning tips", 1300, 21, "Equipment"),
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
    """A demo account with credits, a site with sectors, the demo keywords and three
    drafted articles. Returns a new API key only if one was needed."""
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


@dataclass(frozen=True)
class DemoRunPrep:
    """What the demo did so its automation run has work and credits."""

    keywords_waiting: int  # unclustered keywords the run will take
    round_no: int | None  # set when every demo keyword was used: a fresh round was imported
    topped_up: int  # credits added so the run can finish


def prepare_demo_run(engine: Engine, site_id: int) -> DemoRunPrep:
    """Make sure a demo automation run has keywords to work on and credits to pay with.

    A second demo on the same data finds every keyword clustered, so it imports the demo
    keywords again with a round suffix ("cold brew ratio (round 2)"): every run walks all
    seven stages. The account is topped up to DEMO_RUN_CREDITS, once per run number."""
    with Session(engine, expire_on_commit=False) as session:
        site = session.get(Site, site_id)
        assert site is not None, f"site {site_id} not found"
        waiting = _unclustered(session, site_id)
        round_no = None
        if waiting == 0:
            round_no = _import_round(session, site)
            waiting = _unclustered(session, site_id)
        runs = session.exec(
            select(func.count()).select_from(AutomationRun).where(AutomationRun.site_id == site_id)
        ).scalar_one()
        session.commit()
    topped_up = _top_up_for_run(engine, site.account_id, f"demo:site-{site_id}:run-{runs + 1}")
    return DemoRunPrep(waiting, round_no, topped_up)


def _unclustered(session: Session, site_id: int) -> int:
    return int(
        session.exec(
            select(func.count())
            .select_from(Keyword)
            .where(Keyword.site_id == site_id, Keyword.cluster_id.is_(None))
        ).scalar_one()
    )


def _import_round(session: Session, site: Site) -> int:
    """The demo keywords again under the first round suffix none of them has yet."""
    existing = set(
        session.exec(select(Keyword.keyword).where(Keyword.site_id == site.id)).scalars().all()
    )
    round_no = 2
    while any(_in_round(kw, round_no) in existing for kw, *_ in DEMO_KEYWORDS):
        round_no += 1
    sectors = _sectors(session, site.id)
    for kw, volume, difficulty, sector in DEMO_KEYWORDS:
        session.add(
            _keyword(site, _in_round(kw, round_no), volume, difficulty, sectors.get(sector))
        )
    session.flush()
    return round_no


def _in_round(keyword: str, round_no: int) -> str:
    return f"{keyword} (round {round_no})"


def _top_up_for_run(engine: Engine, account_id: int, key: str) -> int:
    """Bring available credits up to DEMO_RUN_CREDITS, at most once per run number: the
    key says whether this run was topped up already (for any amount)."""
    ledger = Ledger(engine)
    available = ledger.balance(account_id).available
    if available >= DEMO_RUN_CREDITS:
        return 0
    amount = DEMO_RUN_CREDITS - available
    description = "Demo top-up before an automation run"
    try:
        result = ledger.top_up(account_id, amount, f"{key}:top-up", description=description)
    except IdempotencyConflict:  # topped up for this run before, by another amount
        return 0
    return 0 if result.replayed else amount


def _sectors(session: Session, site_id: int) -> dict[str, int]:
    rows = session.exec(select(Sector.name, Sector.id).where(Sector.site_id == site_id)).all()
    return {name: sector_id for name, sector_id in rows}


def _keyword(site: Site, text: str, volume: int, difficulty: int, sector_id: int | None) -> Keyword:
    intent = "commercial" if text.startswith("best ") else "informational"
    return Keyword(
        account_id=site.account_id,
        site_id=site.id,
        sector_id=sector_id,
        keyword=text,
        volume=volume,
        difficulty=difficulty,
        intent=intent,
    )


def _seed_keywords(session: Session, site: Site) -> None:
    """Add the demo keywords the site lacks (an older seed had fewer)."""
    existing = set(
        session.exec(select(Keyword.keyword).where(Keyword.site_id == site.id)).scalars().all()
    )
    sectors = _sectors(session, site.id)
    for kw, volume, difficulty, sector in DEMO_KEYWORDS:
        if kw not in existing:
            session.add(_keyword(site, kw, volume, difficulty, sectors.get(sector)))


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
            session.flush()
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
        _seed_keywords(session, site)
        session.commit()
        task_ids = (
            session.exec(select(Task.id).where(Task.site_id == site.id).order_by(Task.id))
            .scalars()
            .all()
        )
        return site.id, list(task_ids)
