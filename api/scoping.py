"""Account scoping: an account sees only its own rows, and someone else's row is a 404.

Why 404 and never 403: a 403 would confirm that the id exists in another account.
Every by-id read goes through `get_owned`, every list through `owned`.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Path
from sqlalchemy import Select
from sqlmodel import Session, select

from api.deps import CurrentAccountId, SessionDep
from models import Site

M = TypeVar("M")

# Ids are 32-bit on PostgreSQL; bigger numbers are refused before they reach the database.
MAX_ID = 2**31 - 1


def id_path(description: str) -> Any:
    return Path(ge=1, le=MAX_ID, description=description)


def get_owned(session: Session, model: type[M], obj_id: int, account_id: int) -> M:
    """The row `obj_id` of `model` if it belongs to the account, else a 404."""
    row = session.get(model, obj_id)
    if row is None or getattr(row, "account_id", None) != account_id:
        raise HTTPException(status_code=404, detail=f"{model.__name__} {obj_id} not found")
    return row


def owned(model: Any, account_id: int) -> Select[Any]:
    """SELECT of the account's rows of `model`, to filter and paginate further."""
    return select(model).where(model.account_id == account_id)


SiteIdPath = Annotated[int, id_path("The site's id")]


def owned_site(
    site_id: SiteIdPath,
    session: SessionDep,
    account_id: CurrentAccountId,
) -> Site:
    return get_owned(session, Site, site_id, account_id)


SiteDep = Annotated[Site, Depends(owned_site)]
