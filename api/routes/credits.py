"""The caller's credits: balance with holds, the ledger, and what each deduction paid for."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentAccountId, LedgerDep, SessionDep
from api.errors import error_responses
from api.pagination import Page, PageDep, newest_first, paginate
from api.schemas import BalancePublic
from api.scoping import owned
from models import CreditTransaction, CreditTransactionPublic, CreditUsageLog, CreditUsageLogPublic

router = APIRouter(prefix="/credits", tags=["credits"], responses=error_responses(401))


@router.get("/balance", response_model=BalancePublic)
def balance(account_id: CurrentAccountId, ledger: LedgerDep) -> BalancePublic:
    """available = credits − reserved: what a new run or batch can still reserve."""
    bal = ledger.balance(account_id)
    return BalancePublic(credits=bal.credits, reserved=bal.reserved, available=bal.available)


@router.get("/transactions", response_model=Page[CreditTransactionPublic])
def transactions(
    account_id: CurrentAccountId, session: SessionDep, page: PageDep
) -> Page[CreditTransactionPublic]:
    stmt = newest_first(owned(CreditTransaction, account_id), CreditTransaction)
    return paginate(session, stmt, page, CreditTransactionPublic)


@router.get("/usage", response_model=Page[CreditUsageLogPublic])
def usage(
    account_id: CurrentAccountId,
    session: SessionDep,
    page: PageDep,
    operation_type: Annotated[
        str | None, Query(max_length=50, description="e.g. image_generation")
    ] = None,
) -> Page[CreditUsageLogPublic]:
    stmt = owned(CreditUsageLog, account_id)
    if operation_type:
        stmt = stmt.where(CreditUsageLog.operation_type == operation_type)
    return paginate(session, newest_first(stmt, CreditUsageLog), page, CreditUsageLogPublic)
