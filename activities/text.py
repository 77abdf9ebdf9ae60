"""One generic activity for a metered text AI call, whatever the function.

load the item and build its prompt → wait for a provider-wide slot of the model → one
structured (JSON schema) call → credits and `cost_usd` from the model's config and the
reported tokens → write the answer and record the call in one transaction. A malformed
answer (not JSON, not the schema, cut short) is asked again up to MAX_MALFORMED times in
the same attempt; then the item fails with that error, uncharged. A retried attempt finds
the call's record (keyed like the charge) and answers without calling the provider again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.common import Frozen, heartbeating, non_retryable
from activities.provider_gate import ProviderGate, SlotDeferred, SlotWaitTimeout
from activities.text_functions import TEXT_FUNCTIONS, Call, ItemGone, TextFunction, TextItem
from core import metrics
from domain.ai_functions import UnknownAIFunction, ai_function
from domain.pricing import (
    ModelPricing,
    ModelUnavailable,
    estimate_text_credits,
    load_billing_defaults,
    load_model,
    text_cost_usd,
    text_credits,
)
from models.db import utcnow
from models.engine import AICall
from models.sites import Site
from providers.base import ProviderError, TextResult
from providers.registry import ProviderRegistry

T = TypeVar("T")
CALLS = AICall.__table__
SITES = Site.__table__
MAX_MALFORMED = 3


class TextPlanInput(Frozen):
    function_name: str
    account_id: int
    item_ids: list[int]
    model: str | None = None
    site_id: int | None = None


class TextModel(Frozen):
    """The resolved model's limits and prices (what a call and its charge need)."""

    model_name: str
    provider: str
    max_concurrency: int
    tokens_per_credit: int
    cost_per_1k_input: Decimal
    cost_per_1k_output: Decimal

    def pricing(self) -> ModelPricing:
        return ModelPricing(
            model_name=self.model_name,
            provider=self.provider,
            model_type="text",
            cost_per_1k_input=self.cost_per_1k_input,
            cost_per_1k_output=self.cost_per_1k_output,
            cost_per_image=Decimal("0"),
            credits_per_image=0,
            tokens_per_credit=self.tokens_per_credit,
            max_concurrency=self.max_concurrency,
        )


class TextPlanOutput(Frozen):
    model: TextModel
    credit_price_usd: Decimal
    item_ids: list[int]  # the account's items still needing this function, in order
    missing_ids: list[int]  # unknown, another account's, or already done
    credits_per_item: int  # the estimate a hold is sized by


class TextCallInput(Frozen):
    function_name: str
    workflow_id: str
    account_id: int
    item_id: int
    model: TextModel
    slot_wait_s: float = 120.0
    members: list[int] = []  # an item made of others: a keyword batch's keyword ids
    priority: int = 0  # among calls waiting for the model's slots, higher goes first

    def item(self) -> TextItem:
        return TextItem(self.account_id, self.item_id, self.workflow_id, tuple(self.members))


class TextCallOutput(Frozen):
    item_id: int
    status: str  # done | failed | deferred (stopped or no slot before the provider)
    credits: int = 0
    cost_usd: Decimal = Decimal("0")
    tokens_input: int = 0
    tokens_output: int = 0
    error: str | None = None
    reused: bool = False
    provider_s: float = 0.0
    result: dict[str, Any] = {}


class WithdrawTextInput(Frozen):
    function_name: str
    workflow_id: str
    item_id: int
    error: str
    account_id: int = 0
    members: list[int] = []


class TextActivities:
    """Text AI work with its dependencies injected: database, providers, provider slots."""

    def __init__(
        self,
        engine: Engine,
        providers: ProviderRegistry,
        gate: ProviderGate,
        executor: Executor | None = None,
    ) -> None:
        self.engine = engine
        self.providers = providers
        self.gate = gate
        self.executor = executor

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # ---- plan ----------------------------------------------------------------------
    @activity.defn(name="plan_text_batch")
    def plan_text_batch(self, inp: TextPlanInput) -> TextPlanOutput:
        """Resolve the model; keep the account's items that still need this function."""
        try:
            spec = _spec(inp.function_name)
            with self.engine.connect() as conn:
                site_id = inp.site_id or spec.site_of(conn, inp.account_id, inp.item_ids)
                model = resolve_text_model(conn, inp.model, site_id)
                todo = spec.needing_work(conn, inp.account_id, inp.item_ids)
                price = load_billing_defaults(conn).credit_price_usd
        except (ModelUnavailable, UnknownAIFunction) as exc:
            raise non_retryable(exc) from exc
        keep = set(todo)
        estimate = estimate_text_credits(
            model.pricing(), spec.estimate_prompt_chars, spec.max_output_tokens
        )
        return TextPlanOutput(
            model=model,
            credit_price_usd=price,
            item_ids=[i for i in dict.fromkeys(inp.item_ids) if i in keep],
            missing_ids=sorted(set(inp.item_ids) - keep),
            credits_per_item=estimate,
        )

    # ---- one call ------------------------------------------------------------------
    @activity.defn(name="generate_text")
    async def generate_text(self, inp: TextCallInput) -> TextCallOutput:
        spec = _spec(inp.function_name)
        key = spec.fn.item_key(inp.workflow_id, inp.item_id)
        if recorded := await self._blocking(self._recorded, key, inp.item_id):
            return recorded
        try:
            call = await self._blocking(self._load, spec, inp)
        except ItemGone as exc:
            return TextCallOutput(item_id=inp.item_id, status="failed", error=str(exc))
        async with heartbeating():
            answered = await self._ask(inp, call)
        if isinstance(answered, TextCallOutput):
            if answered.status == "failed":
                await self._blocking(self._record_failure, spec, inp, answered.error or "")
            return answered
        result, provider_s = answered
        return await self._blocking(self._write, spec, inp, key, result, provider_s)

    async def _ask(
        self, inp: TextCallInput, call: Call
    ) -> tuple[TextResult, float] | TextCallOutput:
        """The call, asked again while the answer is malformed (bounded)."""
        for attempt in range(1, MAX_MALFORMED + 1):
            try:
                return await self._call_once(inp, call)
            except (SlotDeferred, SlotWaitTimeout):
                return TextCallOutput(item_id=inp.item_id, status="deferred")
            except ProviderError as exc:
                if exc.code == "bad_response" and attempt < MAX_MALFORMED:
                    activity.logger.warning("malformed answer (%s), asking again", exc.message)
                    continue
                if exc.code == "bad_response":
                    error = f"malformed answer {MAX_MALFORMED} times: {exc.message}"
                    return TextCallOutput(item_id=inp.item_id, status="failed", error=error)
                if not exc.retryable:
                    return TextCallOutput(item_id=inp.item_id, status="failed", error=exc.message)
                if exc.retry_after:  # every caller of this model waits it out
                    await self.gate.back_off(inp.model.model_name, exc.retry_after)
                delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
                raise ApplicationError(exc.message, type=exc.code, next_retry_delay=delay) from exc
        raise AssertionError("unreachable")

    async def _call_once(self, inp: TextCallInput, call: Call) -> tuple[TextResult, float]:
        model = inp.model
        async with self.gate.slot(
            model.model_name,
            model.max_concurrency,
            workflow_id=inp.workflow_id,
            max_wait_s=inp.slot_wait_s,
            priority=inp.priority,
        ):
            started = time.monotonic()
            try:
                result = await self.providers.text(model.provider).complete_json(
                    model=model.model_name,
                    system=call.prompt.system,
                    prompt=call.prompt.user,
                    schema_name=call.schema_name,
                    schema=call.schema,
                    max_output_tokens=call.max_output_tokens,
                )
            except Exception as exc:
                elapsed = time.monotonic() - started
                metrics.count_provider_call(model.provider, model.model_name, elapsed, exc)
                raise
            elapsed = time.monotonic() - started
            metrics.count_provider_call(model.provider, model.model_name, elapsed)
            return result, elapsed

    def _load(self, spec: TextFunction, inp: TextCallInput) -> Call:
        with self.engine.connect() as conn:
            return spec.load(conn, inp.item())

    def _write(
        self,
        spec: TextFunction,
        inp: TextCallInput,
        key: str,
        result: TextResult,
        provider_s: float,
    ) -> TextCallOutput:
        pricing = inp.model.pricing()
        credits = text_credits(pricing, result.input_tokens, result.output_tokens)
        cost = text_cost_usd(pricing, result.input_tokens, result.output_tokens)
        try:
            with self.engine.begin() as conn:
                written = spec.write(conn, inp.item(), result.data)
                self._insert_call(conn, spec, inp, key, "done", result, credits, cost, written)
        except IntegrityError:  # a twin attempt recorded it first: its answer stands
            recorded = self._recorded(key, inp.item_id)
            if recorded is None:
                raise
            return recorded
        _count_item(spec.fn.name, "done")
        return TextCallOutput(
            item_id=inp.item_id,
            status="done",
            credits=credits,
            cost_usd=cost,
            tokens_input=result.input_tokens,
            tokens_output=result.output_tokens,
            provider_s=round(provider_s, 3),
            result=written,
        )

    def _insert_call(
        self,
        conn: Connection,
        spec: TextFunction,
        inp: TextCallInput,
        key: str,
        status: str,
        result: TextResult | None,
        credits: int,
        cost: Decimal,
        details: dict[str, Any],
        error: str | None = None,
    ) -> None:
        conn.execute(
            insert(CALLS).values(
                account_id=inp.account_id,
                idempotency_key=key,
                function_name=spec.fn.name,
                workflow_id=inp.workflow_id,
                item_type=spec.fn.item_kind,
                item_id=inp.item_id,
                model_name=inp.model.model_name,
                status=status,
                tokens_input=result.input_tokens if result else 0,
                tokens_output=result.output_tokens if result else 0,
                credits=credits,
                cost_usd=cost,
                error=error,
                details=details,
                created_at=utcnow(),
            )
        )

    def _record_failure(self, spec: TextFunction, inp: TextCallInput, error: str) -> None:
        key = spec.fn.item_key(inp.workflow_id, inp.item_id)
        try:
            with self.engine.begin() as conn:
                self._insert_call(conn, spec, inp, key, "failed", None, 0, Decimal("0"), {}, error)
        except IntegrityError:
            return  # already recorded (and counted)
        _count_item(spec.fn.name, "failed")

    def _recorded(self, key: str, item_id: int) -> TextCallOutput | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(CALLS).where(CALLS.c.idempotency_key == key)).first()
        if row is None:
            return None
        status = {"done": "done", "withdrawn": "failed"}.get(row.status, "failed")
        return TextCallOutput(
            item_id=item_id,
            status=status,
            credits=row.credits,
            cost_usd=Decimal(row.cost_usd),
            tokens_input=row.tokens_input,
            tokens_output=row.tokens_output,
            error=row.error,
            reused=True,
            result=dict(row.details or {}),
        )

    # ---- withdraw ------------------------------------------------------------------
    @activity.defn(name="withdraw_text")
    def withdraw_text(self, inp: WithdrawTextInput) -> None:
        """An answer that could not be charged is taken back, never delivered free."""
        spec = _spec(inp.function_name)
        key = spec.fn.item_key(inp.workflow_id, inp.item_id)
        with self.engine.begin() as conn:
            item = TextItem(inp.account_id, inp.item_id, inp.workflow_id, tuple(inp.members))
            spec.withdraw(conn, item)
            conn.execute(
                update(CALLS)
                .where(CALLS.c.idempotency_key == key)
                .values(status="withdrawn", error=inp.error[:2000])
            )


def _count_item(function_name: str, outcome: str) -> None:
    """A text item's answer recorded (once: a replay finds the record and counts nothing)."""
    metrics.AI_ITEMS.labels(function_name, outcome).inc()
    if function_name == "generate_content":
        metrics.ARTICLES.labels("generated" if outcome == "done" else outcome).inc()


def _spec(function_name: str) -> TextFunction:
    fn = ai_function(function_name)
    spec = TEXT_FUNCTIONS.get(fn.name)
    if spec is None:
        raise UnknownAIFunction(f"{fn.name} is not a text AI function")
    return spec


def resolve_text_model(conn: Connection, requested: str | None, site_id: int | None) -> TextModel:
    """Request, then the site's text model, then the billing default; an active text model."""
    site_model = None
    if site_id is not None:
        site_model = conn.execute(
            select(SITES.c.text_model).where(SITES.c.id == site_id)
        ).scalar_one_or_none()
    name = requested or site_model or load_billing_defaults(conn).text_model
    p = load_model(conn, name, "text")
    return TextModel(
        model_name=p.model_name,
        provider=p.provider,
        max_concurrency=p.max_concurrency,
        tokens_per_credit=p.tokens_per_credit,
        cost_per_1k_input=p.cost_per_1k_input,
        cost_per_1k_output=p.cost_per_1k_output,
    )
