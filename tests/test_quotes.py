"""The batch quote (what `POST /images/batches` checks against available credits) counts
exactly the images the plan would make: not those already generated, nor those another
running batch has claimed, so two batches on the same tasks never get a false 402."""

from __future__ import annotations

from sqlmodel import Session

from domain.images import quote_batch
from models import Image
from models.runs import ImageBatch
from tests import builders


def _setup(engine, claimed_by: str | None, batch_status: str | None):
    builders.billing_config(engine, "0.01")
    cfg = builders.model_config(engine)  # 2 credits per image
    acct, _ = builders.account(engine, credits=100)
    site = builders.site(engine, acct, max_in_article_images=1)
    tasks = [builders.task_with_content(engine, acct, site.id, f"Topic {i}")[0] for i in range(3)]
    with Session(engine) as s:
        if batch_status:
            s.add(ImageBatch(batch_id=claimed_by, account_id=acct, status=batch_status))
        first = tasks[0].id
        s.add(Image(account_id=acct, site_id=site.id, task_id=first, status="generated"))
        s.add(
            Image(
                account_id=acct,
                site_id=site.id,
                task_id=first,
                image_type="in_article",
                position=1,
                status="pending",
                batch_id=claimed_by,
            )
        )
        s.commit()
    return acct, cfg, [t.id for t in tasks]


def _quote(engine, acct, cfg, task_ids):
    with engine.connect() as conn:
        return quote_batch(conn, acct, task_ids, cfg.model_name, None)


def test_a_running_batchs_claimed_images_are_not_quoted_again(engine):
    acct, cfg, task_ids = _setup(engine, "image-batch-1-aaa", "running")
    quote = _quote(engine, acct, cfg, task_ids)
    # 3 tasks × 2 slots, minus 1 generated, minus 1 the running batch will make
    assert (quote.images, quote.credits) == (4, 8)


def test_a_finished_batchs_leftovers_are_quoted(engine):
    acct, cfg, task_ids = _setup(engine, "image-batch-1-bbb", "cancelled")
    quote = _quote(engine, acct, cfg, task_ids)
    assert (quote.images, quote.credits) == (5, 10)  # the pending slot is this batch's now


def test_an_unclaimed_pending_image_is_quoted(engine):
    acct, cfg, task_ids = _setup(engine, None, None)
    assert _quote(engine, acct, cfg, task_ids).images == 5
