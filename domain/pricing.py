"""Credits and USD for an AI call, read from `AIModelConfig` by its real field names.

The plan's first bug was a lookup of `input_cost_per_1m` on a model that has
`cost_per_1k_input`; here every lookup goes through `ModelPricing`, and an unknown or
inactive model is a `ModelUnavailable` error with a clear message, never an AttributeError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import Connection, select

from models.billing import AIModelConfig, BillingConfiguration

USD_PLACES = Decimal("0.000001")
DEFAULT_CREDIT_PRICE_USD = Decimal("0.01")


class ModelUnavailable(Exception):
    """The model is unknown, inactive, or of the wrong type: a user error, never retried."""


@dataclass(frozen=True)
class ModelPricing:
    model_name: str
    provider: str
    model_type: str
    cost_per_1k_input: Decimal
    cost_per_1k_output: Decimal
    cost_per_image: Decimal
    credits_per_image: int
    tokens_per_credit: int
    max_concurrency: int

    @classmethod
    def from_config(cls, cfg: AIModelConfig) -> ModelPricing:
        return cls(
            model_name=cfg.model_name,
            provider=cfg.provider,
            model_type=cfg.model_type,
            cost_per_1k_input=Decimal(cfg.cost_per_1k_input or 0),
            cost_per_1k_output=Decimal(cfg.cost_per_1k_output or 0),
            cost_per_image=Decimal(cfg.cost_per_image or 0),
            credits_per_image=int(cfg.credits_per_image),
            tokens_per_credit=max(1, int(cfg.tokens_per_credit)),
            max_concurrency=max(1, int(cfg.max_concurrency)),
        )


@dataclass(frozen=True)
class BillingDefaults:
    credit_price_usd: Decimal
    text_model: str
    image_model: str


def usd(value: Decimal | float | int | str) -> Decimal:
    """Round a USD amount to the 6 places the database stores."""
    return Decimal(str(value)).quantize(USD_PLACES, rounding=ROUND_HALF_UP)


def load_model(conn: Connection, model_name: str, model_type: str | None = None) -> ModelPricing:
    """The active model config named `model_name`, or ModelUnavailable saying why not."""
    table = AIModelConfig.__table__
    row = conn.execute(select(table).where(table.c.model_name == model_name)).mappings().first()
    if row is None:
        raise ModelUnavailable(f"AI model '{model_name}' is not configured")
    if not row["is_active"]:
        raise ModelUnavailable(f"AI model '{model_name}' is inactive")
    if model_type is not None and row["model_type"] != model_type:
        raise ModelUnavailable(
            f"AI model '{model_name}' is a {row['model_type']} model, not a {model_type} model"
        )
    return ModelPricing.from_config(AIModelConfig.model_validate(dict(row)))


def load_billing_defaults(conn: Connection) -> BillingDefaults:
    table = BillingConfiguration.__table__
    row = conn.execute(select(table).order_by(table.c.id).limit(1)).mappings().first()
    if row is None:
        return BillingDefaults(DEFAULT_CREDIT_PRICE_USD, "gpt-4o-mini", "gpt-image-1")
    return BillingDefaults(
        credit_price_usd=Decimal(row["default_credit_price_usd"]),
        text_model=row["default_text_model"],
        image_model=row["default_image_model"],
    )


def text_credits(pricing: ModelPricing, input_tokens: int, output_tokens: int) -> int:
    """max(1, ceil(tokens / tokens_per_credit)): every text call costs at least a credit."""
    tokens = max(0, input_tokens) + max(0, output_tokens)
    return max(1, math.ceil(tokens / pricing.tokens_per_credit))


def text_cost_usd(pricing: ModelPricing, input_tokens: int, output_tokens: int) -> Decimal:
    cost = (Decimal(input_tokens) / 1000) * pricing.cost_per_1k_input + (
        Decimal(output_tokens) / 1000
    ) * pricing.cost_per_1k_output
    return usd(cost)


def image_credits(pricing: ModelPricing, images: int) -> int:
    return pricing.credits_per_image * max(0, images)


def image_cost_usd(
    cost_per_image: Decimal, images: int, provider_cost_usd: Decimal | None = None
) -> Decimal:
    """The provider's reported cost when it gives one, else the configured per-image cost."""
    if provider_cost_usd is not None:
        return usd(provider_cost_usd)
    return usd(cost_per_image * max(0, images))


def billed_usd(credits: int, credit_price_usd: Decimal) -> Decimal:
    return usd(Decimal(credits) * credit_price_usd)


def estimate_text_credits(pricing: ModelPricing, prompt_chars: int, max_output_tokens: int) -> int:
    """A quote for a text call before it is made: ~4 characters a token, plus the output cap."""
    return text_credits(pricing, math.ceil(prompt_chars / 4), max_output_tokens)
