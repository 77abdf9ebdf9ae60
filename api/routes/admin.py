"""Operator routes behind the admin key: accounts, credit top-ups, AI model prices."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from api.deps import EngineDep, LedgerDep, SessionDep, require_admin
from api.errors import error_responses, reject_nulls
from api.schemas import (
    AccountCreateIn,
    AIModelConfigIn,
    AIModelConfigPatch,
    TopUpRequest,
    TopUpResult,
)
from api.scoping import id_path
from domain.accounts import create_account
from models import AccountCreated, AIModelConfig, AIModelConfigPublic
from models.db import utcnow

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=error_responses(401),
)

ModelName = Annotated[str, PathParam(min_length=1, max_length=100)]


@router.post("/accounts", status_code=201, response_model=AccountCreated)
def create_account_route(body: AccountCreateIn, engine: EngineDep) -> AccountCreated:
    """A new account with its first API key (shown once) and its opening balance."""
    created = create_account(engine, body.name, body.credits)
    return AccountCreated(
        id=created.id, name=created.name, credits=created.credits, api_key=created.api_key
    )


@router.post(
    "/accounts/{account_id}/credits",
    response_model=TopUpResult,
    responses=error_responses(404, 409),
)
def top_up(
    account_id: Annotated[int, id_path("The account to credit")],
    body: TopUpRequest,
    ledger: LedgerDep,
) -> TopUpResult:
    """Credit a purchase once per idempotency key; a replay returns the first result."""
    result = ledger.top_up(
        account_id, body.amount, body.idempotency_key, description=body.description
    )
    return TopUpResult(
        transaction_id=result.transaction_id,
        amount=result.amount,
        balance_after=result.balance_after,
        replayed=result.replayed,
    )


@router.get("/ai-models", response_model=list[AIModelConfigPublic])
def list_models(session: SessionDep) -> list[AIModelConfig]:
    stmt = select(AIModelConfig).order_by(AIModelConfig.model_type, AIModelConfig.model_name)
    return list(session.exec(stmt).all())


def _find_model(session: Session, model_name: str) -> AIModelConfig | None:
    return session.exec(select(AIModelConfig).where(AIModelConfig.model_name == model_name)).first()


def _duplicate(model_name: str) -> HTTPException:
    return HTTPException(status_code=409, detail=f"AI model '{model_name}' already exists")


def _single_default(session: Session, cfg: AIModelConfig) -> None:
    """At most one default model per type: making one the default demotes the others."""
    if cfg.is_default:
        session.execute(
            update(AIModelConfig)
            .where(AIModelConfig.model_type == cfg.model_type, AIModelConfig.id != cfg.id)
            .values(is_default=False)
        )


def _commit(session: Session, model_name: str) -> None:
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise _duplicate(model_name) from exc


@router.post(
    "/ai-models",
    status_code=201,
    response_model=AIModelConfigPublic,
    responses=error_responses(409),
)
def create_model(body: AIModelConfigIn, session: SessionDep) -> AIModelConfig:
    if _find_model(session, body.model_name) is not None:
        raise _duplicate(body.model_name)
    cfg = AIModelConfig.model_validate(body.model_dump())
    session.add(cfg)
    session.flush()
    _single_default(session, cfg)
    _commit(session, body.model_name)
    return cfg


@router.patch(
    "/ai-models/{model_name}",
    response_model=AIModelConfigPublic,
    responses=error_responses(404),
)
def update_model(
    model_name: ModelName, body: AIModelConfigPatch, session: SessionDep
) -> AIModelConfig:
    cfg = _find_model(session, model_name)
    if cfg is None:
        raise HTTPException(status_code=404, detail=f"AI model '{model_name}' not found")
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    reject_nulls(changes)
    cfg.sqlmodel_update({**changes, "updated_at": utcnow()})
    session.add(cfg)
    session.flush()
    _single_default(session, cfg)
    _commit(session, model_name)
    return cfg
