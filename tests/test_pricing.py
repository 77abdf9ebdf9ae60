"""Pricing rules of DESIGN §3, read from AIModelConfig by its real field names."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.pricing import (
    ModelPricing,
    ModelUnavailable,
    billed_usd,
    estimate_text_credits,
    image_cost_usd,
    image_credits,
    load_billing_defaults,
    load_model,
    text_cost_usd,
    text_credits,
)
from tests import builders

MINI = ModelPricing(
    model_name="gpt-4o-mini",
    provider="openai",
    model_type="text",
    cost_per_1k_input=Decimal("0.00015"),
    cost_per_1k_output=Decimal("0.0006"),
    cost_per_image=Decimal("0"),
    credits_per_image=0,
    tokens_per_credit=1000,
    max_concurrency=20,
)


@pytest.mark.parametrize(
    ("tokens_in", "tokens_out", "credits"),
    [(0, 0, 1), (10, 5, 1), (600, 400, 1), (600, 401, 2), (2500, 2500, 5)],
)
def test_text_credits_are_at_least_one_and_round_up(tokens_in, tokens_out, credits):
    assert text_credits(MINI, tokens_in, tokens_out) == credits


def test_text_cost_uses_the_per_1k_rates():
    assert text_cost_usd(MINI, 2000, 1000) == Decimal("0.000900")  # 2×0.00015 + 1×0.0006
    assert estimate_text_credits(MINI, prompt_chars=4000, max_output_tokens=1000) == 2


def test_image_cost_prefers_the_providers_figure_and_bills_credits_at_the_credit_price():
    assert image_cost_usd(Decimal("0.04"), 3) == Decimal("0.120000")
    assert image_cost_usd(Decimal("0.04"), 1, Decimal("0.0013")) == Decimal("0.001300")
    pricing = MINI.__class__(**{**MINI.__dict__, "credits_per_image": 5})
    assert image_credits(pricing, 4) == 20
    assert billed_usd(20, Decimal("0.01")) == Decimal("0.200000")


def test_unknown_inactive_or_wrong_type_models_are_clear_errors(engine):
    builders.model_config(engine, model_name="img", model_type="image")
    builders.model_config(engine, model_name="old", is_active=False)
    with engine.connect() as conn:
        assert load_model(conn, "img", "image").credits_per_image == 2
        for name, kind, message in [
            ("nope", None, "AI model 'nope' is not configured"),
            ("old", None, "AI model 'old' is inactive"),
            ("img", "text", "AI model 'img' is a image model, not a text model"),
        ]:
            with pytest.raises(ModelUnavailable, match=message):
                load_model(conn, name, kind)


def test_billing_defaults_without_a_configuration_row(engine):
    with engine.connect() as conn:
        defaults = load_billing_defaults(conn)
    assert (defaults.credit_price_usd, defaults.image_model) == (Decimal("0.01"), "gpt-image-1")
