"""A text AI function end to end on the run engine: `generate_image_prompts` over a list of
articles, against the real dev server, the simulator over HTTP and both databases."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlmodel import Session

from domain.pricing import text_cost_usd, text_credits
from domain.reconcile import reconcile
from models import (
    AICall,
    AITaskLog,
    Content,
    CreditTransaction,
    CreditUsageLog,
    Image,
    Notification,
)
from tests import builders
from tests.temporal_fixtures import WorkerCtx
from workflows.client import start_image_batch, start_text_batch

pytestmark = pytest.mark.temporal


def setup_articles(ctx: WorkerCtx, titles: list[str], credits: int = 500):
    engine = ctx.engine
    builders.billing_config(engine, "0.01")
    text_cfg = builders.text_model_config(engine)
    acct, _ = builders.account(engine, credits=credits)
    site = builders.site(engine, acct, max_in_article_images=2, text_model=text_cfg.model_name)
    pairs = [builders.task_with_content(engine, acct, site.id, title) for title in titles]
    return acct, site, text_cfg, pairs


def rows(engine, model, *where):
    with engine.connect() as conn:
        return conn.execute(select(model.__table__).where(*where)).all()


async def test_generate_image_prompts_meters_every_article_and_fails_only_the_malformed_one(
    wctx: WorkerCtx,
):
    titles = ["Cold Brew at Home", "Espresso Basics", "[malformed] Grinder Guide", "Latte Art"]
    acct, site, cfg, pairs = setup_articles(wctx, titles)
    content_ids = [content.id for _, content in pairs]
    engine = wctx.engine
    before = builders.balance(engine, acct)

    handle = await start_text_batch(
        wctx.client,
        wctx.task_queue,
        account_id=acct,
        function_name="generate_image_prompts",
        item_ids=content_ids,
        site_id=site.id,
    )
    result = await handle.result()

    assert result.status == "completed", result
    assert (result.items_total, result.items_done, result.items_failed) == (4, 3, 1)
    assert any("malformed answer 3 times" in e for e in result.errors), result.errors
    assert wctx.sim.stats()["malformed_answers"] == 3  # bounded: asked three times, no more

    logs = rows(engine, AITaskLog)
    assert [(t.function_name, t.status, t.phase) for t in logs] == [
        ("generate_image_prompts", "success", "DONE")
    ]
    usage = rows(engine, CreditUsageLog)
    deductions = rows(engine, CreditTransaction, CreditTransaction.transaction_type == "deduction")
    assert len(usage) == 3 and len(deductions) == 3  # one each per charged article
    bad = pairs[2][1].id
    assert {u.related_object_id for u in usage} == set(content_ids) - {bad}
    for u in usage:
        assert u.operation_type == "image_prompt_extraction"
        assert u.tokens_input > 0 and u.tokens_output > 0 and u.model_name == cfg.model_name
        pricing = builders.pricing_of(cfg)
        assert u.credits_used == text_credits(pricing, u.tokens_input, u.tokens_output) > 1
        assert u.cost_usd == text_cost_usd(pricing, u.tokens_input, u.tokens_output) > 0
    assert sorted(-d.amount for d in deductions) == sorted(u.credits_used for u in usage)
    used = sum(u.credits_used for u in usage)
    assert result.credits_used == used == logs[0].credits_used
    assert result.cost_usd == sum((u.cost_usd for u in usage), Decimal("0")) == logs[0].cost
    assert builders.balance(engine, acct) == before - used == result.balance
    notes = rows(engine, Notification)
    assert [n.notification_type for n in notes] == ["ai_image_prompts_success"]
    assert (
        "Wrote image prompts for 3 articles" in notes[0].message and "1 failed" in notes[0].message
    )
    assert reconcile(engine) == []

    written = {c.id: c.image_prompts for c in rows(engine, Content)}
    assert written[bad] == []
    for content_id in set(content_ids) - {bad}:
        images = written[content_id]
        assert [i["type"] for i in images] == ["featured", "in_article", "in_article"]
        assert all(i["prompt"] and 0 < len(i["alt_text"]) <= 125 for i in images)
    calls = rows(engine, AICall)
    assert sorted((c.item_id, c.status) for c in calls) == sorted(
        [(i, "done") for i in set(content_ids) - {bad}] + [(bad, "failed")]
    )


async def test_an_image_batch_uses_the_written_prompts_and_alt_texts(wctx: WorkerCtx):
    acct, _site, _cfg, pairs = setup_articles(wctx, ["Cold Brew at Home"])
    image_cfg = builders.model_config(wctx.engine)
    (task, content), engine = pairs[0], wctx.engine
    prompts = await start_text_batch(
        wctx.client,
        wctx.task_queue,
        account_id=acct,
        function_name="generate_image_prompts",
        item_ids=[content.id],
    )
    assert (await prompts.result()).items_done == 1
    batch = await start_image_batch(
        wctx.client,
        wctx.task_queue,
        account_id=acct,
        task_ids=[task.id],
        model=image_cfg.model_name,
    )
    assert (await batch.result()).images_done == 3
    written = rows(engine, Content)[0].image_prompts
    images = sorted(rows(engine, Image), key=lambda i: i.position)
    assert [(i.prompt, i.alt_text) for i in images] == [
        (w["prompt"], w["alt_text"]) for w in written
    ]
    assert reconcile(engine) == []


async def test_articles_already_done_or_of_another_account_are_left_out(wctx: WorkerCtx):
    acct, _site, cfg, pairs = setup_articles(wctx, ["Cold Brew at Home", "Espresso Basics"])
    other, _ = builders.account(wctx.engine, credits=10)
    done = pairs[0][1]
    with Session(wctx.engine) as session:
        row = session.get(Content, done.id)
        row.image_prompts = [{"type": "featured", "prompt": "p", "alt_text": "a"}]
        session.add(row)
        session.commit()
    handle = await start_text_batch(
        wctx.client,
        wctx.task_queue,
        account_id=other,
        function_name="generate_image_prompts",
        item_ids=[c.id for _, c in pairs],
        model=cfg.model_name,
    )
    result = await handle.result()
    assert (result.status, result.items_total, result.credits_used) == ("completed", 0, 0)
    handle = await start_text_batch(
        wctx.client,
        wctx.task_queue,
        account_id=acct,
        function_name="generate_image_prompts",
        item_ids=[c.id for _, c in pairs],
    )
    result = await handle.result()
    assert (result.items_total, result.items_done) == (1, 1)
    assert reconcile(wctx.engine) == []
