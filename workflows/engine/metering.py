"""Metering: the bookkeeping steps of an AI function around its generations (DESIGN §2, §3).

open the task log → reserve → charge each item as it lands → keep the hold alive while
paused → release what is left → close the log → notify. Every step is an idempotent
activity keyed by the workflow id and a business step, so a retry, a replay or a crashed
worker never charges or notifies twice. The charges of every item that landed in one
workflow task go to the ledger in one activity (one account lock), each with its own key,
ledger entry, usage log and balance.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow

from workflows.engine.policies import DB_RETRY, DB_TIMEOUT, message

with workflow.unsafe.imports_passed_through():
    from activities.common import Frozen
    from activities.ledger import (
        AccountRef,
        DeductInput,
        DeductManyInput,
        DeductOutcome,
        HoldRef,
        LedgerActivities,
        ReserveInput,
        ReserveOutput,
    )
    from activities.logging import (
        CloseTaskLogInput,
        LoggingActivities,
        NotifyInput,
        OpenTaskLogInput,
    )
    from domain.ai_functions import AIFunction, Outcome
    from domain.pricing import billed_usd

LOG_STATUS = {"completed": "success", "cancelled": "cancelled", "failed": "error"}


class Charge(Frozen):
    """What one produced item costs: its credits, the provider's USD and the tokens."""

    item_id: int
    credits: int
    cost_usd: Decimal = Decimal("0")
    tokens_input: int = 0
    tokens_output: int = 0


class MeterState(BaseModel):
    """Carried across continue-as-new: only ever gains fields with defaults."""

    task_log_id: int | None = None
    model_name: str | None = None
    credit_price_usd: Decimal = Decimal("0.01")
    hold_ids: list[int] = Field(default_factory=list)
    credits_reserved: int = 0
    credits_used: int = 0
    cost_usd: Decimal = Decimal("0")
    balance: int | None = None
    notes: int = 0  # paused notifications sent (each has its own key)


class Meter:
    """One AI function's metering inside a workflow: `fn` names the log, usage and
    notification types; `prefix` (the workflow id, or `<run id>:<function>` for a stage of
    a run) makes the keys of its log, hold and notifications."""

    def __init__(
        self, fn: AIFunction, account_id: int, workflow_id: str, state: MeterState, prefix: str
    ) -> None:
        self.fn = fn
        self.account_id = account_id
        self.workflow_id = workflow_id
        self.state = state
        self.prefix = prefix
        self._queue: list[tuple[Charge, asyncio.Future[DeductOutcome]]] = []
        self._charger: asyncio.Task[None] | None = None

    # ---- the log -------------------------------------------------------------------
    async def open(self, payload: dict[str, Any], model_name: str | None = None) -> int:
        log = await workflow.execute_activity_method(
            LoggingActivities.open_task_log,
            OpenTaskLogInput(
                account_id=self.account_id,
                function_name=self.fn.name,
                idempotency_key=f"{self.prefix}:task-log",
                workflow_id=self.workflow_id,
                model_name=model_name,
                payload=payload,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Open the AI task log ({self.fn.name})",
        )
        self.state.task_log_id = log.task_log_id
        return log.task_log_id

    async def close(self, outcome: str, result: dict[str, Any], error: str | None) -> None:
        assert self.state.task_log_id is not None
        await workflow.execute_activity_method(
            LoggingActivities.close_task_log,
            CloseTaskLogInput(
                task_log_id=self.state.task_log_id,
                status=LOG_STATUS[outcome],
                cost=self.state.cost_usd,
                credits_used=self.state.credits_used,
                result=result,
                error=error,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Close the AI task log ({outcome})",
        )

    async def notify(
        self,
        outcome: Outcome,
        title: str,
        message: str,
        details: dict[str, Any],
        *,
        key: str | None = None,
        severity: str | None = None,
    ) -> None:
        kind = self.fn.notification_type(outcome)
        default_severity = {"success": "info", "failed": "error"}.get(outcome, "warning")
        await workflow.execute_activity_method(
            LoggingActivities.notify,
            NotifyInput(
                account_id=self.account_id,
                notification_type=kind,
                title=title,
                message=message,
                idempotency_key=key or f"{self.prefix}:done",
                severity=severity or default_severity,
                details={**details, "workflow_id": self.workflow_id},
                ai_task_log_id=self.state.task_log_id,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Notify {kind}",
        )

    async def notify_paused(
        self, reason: str, title: str, message: str, details: dict[str, Any]
    ) -> None:
        """Each pause has its own notification (a run may pause several times)."""
        self.state.notes += 1
        await self.notify(
            "paused",
            title,
            message,
            {**details, "pause_reason": reason},
            key=f"{self.prefix}:paused:{self.state.notes}",
        )

    # ---- the hold ------------------------------------------------------------------
    async def reserve(self, amount: int, key: str) -> ReserveOutput:
        """Hold `amount` credits more; a shortfall is an answer (`ok=False`), not an error."""
        hold = await workflow.execute_activity_method(
            LedgerActivities.reserve_credits,
            ReserveInput(
                account_id=self.account_id,
                amount=amount,
                idempotency_key=key,
                operation_type=self.fn.operation_type,
                workflow_id=self.workflow_id,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Reserve {amount} credits",
        )
        if hold.ok and hold.hold_id is not None:
            self.state.hold_ids.append(hold.hold_id)
            self.state.credits_reserved += hold.amount
            self.state.balance = hold.balance
        return hold

    async def keep_alive(self) -> None:
        """A long pause keeps its credits: push the holds' expiry out again."""
        for hold_id in list(self.state.hold_ids):
            out = await workflow.execute_activity_method(
                LedgerActivities.extend_hold,
                HoldRef(hold_id=hold_id),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary="Keep the credit hold alive while paused",
            )
            if not out.open:  # released meanwhile: later charges use available credits
                self.state.hold_ids.remove(hold_id)

    async def release(self) -> None:
        """Give back every credit the holds did not consume; then the balance is final."""
        for hold_id in self.state.hold_ids:
            released = await workflow.execute_activity_method(
                LedgerActivities.release_hold,
                HoldRef(hold_id=hold_id),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary="Release unused credits",
            )
            self.state.balance = released.balance
        if not self.state.hold_ids:
            self.state.balance = await self._balance()
        self.state.hold_ids = []
        self.state.credits_reserved = self.state.credits_used

    def reserved_left(self) -> int:
        return max(0, self.state.credits_reserved - self.state.credits_used)

    async def _balance(self) -> int:
        bal = await workflow.execute_activity_method(
            LedgerActivities.get_balance,
            AccountRef(account_id=self.account_id),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="Read the balance",
        )
        return bal.credits

    # ---- charges -------------------------------------------------------------------
    async def charge(self, charge: Charge) -> DeductOutcome:
        """Deduct one item's credits (exactly once: its key is fixed); the outcome says
        whether it was charged or why not. A free item is counted without a deduction."""
        if charge.credits <= 0:
            self._count(charge, 0, self.state.balance)
            return DeductOutcome()
        future: asyncio.Future[DeductOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append((charge, future))
        if self._charger is None or self._charger.done():
            self._charger = asyncio.create_task(self._run_charger())
        outcome = await future
        if outcome.result is not None:
            self._count(charge, outcome.result.amount, outcome.result.balance_after)
        return outcome

    def _count(self, charge: Charge, credits: int, balance: int | None) -> None:
        self.state.credits_used += credits
        self.state.cost_usd += charge.cost_usd
        self.state.balance = balance

    async def _run_charger(self) -> None:
        """Everything queued in one workflow task goes to the ledger together."""
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                out = await self._deduct_many([charge for charge, _ in batch])
            except Exception as err:  # retries exhausted: each item learns why
                outcome = DeductOutcome(error_type="ChargeFailed", message=message(err))
                for _, future in batch:
                    future.set_result(outcome)
                continue
            for (_, future), outcome in zip(batch, out.outcomes, strict=True):
                future.set_result(outcome)

    async def _deduct_many(self, charges: list[Charge]) -> Any:
        s = self.state
        hold_id = s.hold_ids[-1] if s.hold_ids else None
        items = [
            DeductInput(
                account_id=self.account_id,
                amount=c.credits,
                idempotency_key=self.fn.item_key(self.workflow_id, c.item_id),
                operation_type=self.fn.operation_type,
                hold_id=hold_id,
                cost_usd=c.cost_usd,
                billed_usd=billed_usd(c.credits, s.credit_price_usd),
                model_name=s.model_name,
                tokens_input=c.tokens_input,
                tokens_output=c.tokens_output,
                related_object_type=self.fn.item_kind,
                related_object_id=c.item_id,
                ai_task_log_id=s.task_log_id,
                description=f"{self.fn.name}: {self.fn.item_kind} {c.item_id} with {s.model_name}",
            )
            for c in charges
        ]
        ids = ", ".join(str(c.item_id) for c in charges)
        # A regular activity, not a local one: a local activity's result reaches the
        # workflow at a different point on replay than it did live (with other completions
        # in the same task), which changed the order of later commands; the recorded
        # histories caught it. One activity still charges every item that landed together.
        return await workflow.execute_activity_method(
            LedgerActivities.deduct_credits_many,
            DeductManyInput(account_id=self.account_id, items=items),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"Charge {self.fn.item_kind} {ids}",
        )
