"""Ledger activities: reserve, deduct, release, balance. Idempotent by key, so a
retried activity never charges twice (the ledger returns the first result)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from temporalio import activity

from activities.common import Frozen, translate_domain_error
from domain.ledger import (
    DeductionResult,
    DeductItem,
    InsufficientCredits,
    Ledger,
    LedgerError,
    Usage,
)


class ReserveInput(Frozen):
    account_id: int
    amount: int
    idempotency_key: str
    operation_type: str
    workflow_id: str | None = None


class ReserveOutput(Frozen):
    ok: bool
    hold_id: int | None = None
    amount: int = 0
    expires_at: datetime | None = None
    required: int = 0
    available: int = 0
    balance: int = 0
    message: str = ""


class DeductInput(Frozen):
    account_id: int
    amount: int
    idempotency_key: str
    operation_type: str
    hold_id: int | None = None
    cost_usd: Decimal = Decimal("0")
    billed_usd: Decimal = Decimal("0")
    model_name: str | None = None
    tokens_input: int = 0
    tokens_output: int = 0
    related_object_type: str | None = None
    related_object_id: int | None = None
    ai_task_log_id: int | None = None
    description: str = ""
    details: dict[str, Any] = {}


class DeductOutput(Frozen):
    transaction_id: int
    usage_log_id: int
    amount: int
    balance_after: int
    replayed: bool


class DeductManyInput(Frozen):
    account_id: int
    items: list[DeductInput]


class DeductOutcome(Frozen):
    result: DeductOutput | None = None
    error_type: str | None = None  # InsufficientCredits, IdempotencyConflict, ...
    message: str = ""


class DeductManyOutput(Frozen):
    outcomes: list[DeductOutcome]


class HoldRef(Frozen):
    hold_id: int


class ExtendHoldOutput(Frozen):
    open: bool


class ReleaseOutput(Frozen):
    hold_id: int
    released: int
    consumed: int
    balance: int


class ExpireHoldsInput(Frozen):
    now: datetime


class ExpireHoldsOutput(Frozen):
    released: int


class AccountRef(Frozen):
    account_id: int


class BalanceOutput(Frozen):
    credits: int
    reserved: int
    available: int


class LedgerActivities:
    """The ledger as Temporal activities (sync: they run in the worker's thread pool)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @activity.defn(name="reserve_credits")
    def reserve_credits(self, inp: ReserveInput) -> ReserveOutput:
        """Credit check: hold the estimate. A shortfall is an answer, not an error, so the
        workflow decides whether to fail fast or pause."""
        try:
            hold = self.ledger.reserve(
                inp.account_id,
                inp.amount,
                inp.idempotency_key,
                operation_type=inp.operation_type,
                workflow_id=inp.workflow_id,
            )
        except InsufficientCredits as exc:
            return ReserveOutput(
                ok=False, required=exc.required, available=exc.available, message=str(exc)
            )
        except Exception as exc:
            raise translate_domain_error(exc) from exc
        bal = self.ledger.balance(inp.account_id)
        return ReserveOutput(
            ok=True,
            hold_id=hold.hold_id,
            amount=hold.amount,
            expires_at=hold.expires_at,
            balance=bal.credits,
        )

    @activity.defn(name="deduct_credits")
    def deduct_credits(self, inp: DeductInput) -> DeductOutput:
        try:
            res = self.ledger.deduct(
                inp.account_id,
                inp.amount,
                inp.idempotency_key,
                _usage(inp),
                hold_id=inp.hold_id,
                description=inp.description,
            )
        except Exception as exc:
            raise translate_domain_error(exc) from exc
        return _deduct_output(res)

    @activity.defn(name="deduct_credits_many")
    def deduct_credits_many(self, inp: DeductManyInput) -> DeductManyOutput:
        """The deductions of every image that landed in one workflow task, one lock on the
        account for all; each outcome in its place (a refusal does not fail the others)."""
        items = [
            DeductItem(
                amount=d.amount,
                key=d.idempotency_key,
                usage=_usage(d),
                hold_id=d.hold_id,
                description=d.description,
            )
            for d in inp.items
        ]
        outcomes = []
        for res in self.ledger.deduct_many(inp.account_id, items):
            if isinstance(res, LedgerError):
                outcomes.append(DeductOutcome(error_type=type(res).__name__, message=str(res)))
            else:
                outcomes.append(DeductOutcome(result=_deduct_output(res)))
        return DeductManyOutput(outcomes=outcomes)

    @activity.defn(name="release_hold")
    def release_hold(self, inp: HoldRef) -> ReleaseOutput:
        try:
            res = self.ledger.release(inp.hold_id)
        except Exception as exc:
            raise translate_domain_error(exc) from exc
        bal = self.ledger.balance(res.account_id)
        return ReleaseOutput(
            hold_id=res.hold_id, released=res.released, consumed=res.consumed, balance=bal.credits
        )

    @activity.defn(name="get_balance")
    def get_balance(self, inp: AccountRef) -> BalanceOutput:
        bal = self.ledger.balance(inp.account_id)
        return BalanceOutput(credits=bal.credits, reserved=bal.reserved, available=bal.available)

    @activity.defn(name="expire_holds")
    def expire_holds(self, inp: ExpireHoldsInput) -> ExpireHoldsOutput:
        """Release every open hold whose expiry is before `now` (the sweeper's clock)."""
        return ExpireHoldsOutput(released=self.ledger.expire_holds(now=inp.now))

    @activity.defn(name="extend_hold")
    def extend_hold(self, inp: HoldRef) -> ExtendHoldOutput:
        """Keep a paused run's hold from expiring."""
        try:
            return ExtendHoldOutput(open=self.ledger.extend_hold(inp.hold_id))
        except Exception as exc:
            raise translate_domain_error(exc) from exc


def _usage(inp: DeductInput) -> Usage:
    return Usage(
        operation_type=inp.operation_type,
        cost_usd=inp.cost_usd,
        billed_usd=inp.billed_usd,
        model_name=inp.model_name,
        tokens_input=inp.tokens_input,
        tokens_output=inp.tokens_output,
        related_object_type=inp.related_object_type,
        related_object_id=inp.related_object_id,
        ai_task_log_id=inp.ai_task_log_id,
        details=inp.details,
    )


def _deduct_output(res: DeductionResult) -> DeductOutput:
    return DeductOutput(
        transaction_id=res.transaction_id,
        usage_log_id=res.usage_log_id,
        amount=res.amount,
        balance_after=res.balance_after,
        replayed=res.replayed,
    )
