"""One page shape for every list: `{"data": [...], "count": total}`, newest first.

Why one helper: every list route gets the same bounds (limit 1..500, default 50), the same
total count over the filtered query, and the same stable order, written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlmodel import Session

T = TypeVar("T")

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_SKIP = 10_000_000


class Page(BaseModel, Generic[T]):
    data: list[T]
    count: int


@dataclass(frozen=True)
class PageParams:
    skip: int
    limit: int


async def page_params(
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP, description="Rows to skip")] = 0,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Rows to return (1..500)")
    ] = DEFAULT_LIMIT,
) -> PageParams:
    return PageParams(skip=skip, limit=limit)


PageDep = Annotated[PageParams, Depends(page_params)]


def newest_first(stmt: Select[Any], model: Any) -> Select[Any]:
    """created_at then id, both descending: stable when rows share a timestamp."""
    return stmt.order_by(model.created_at.desc(), model.id.desc())


def fetch_page(session: Session, stmt: Select[Any], page: PageParams) -> tuple[list[Any], int]:
    """One ordered slice of the rows of `stmt`, and how many rows match in total."""
    count_stmt = select(func.count()).select_from(stmt.order_by(None).subquery())
    total = session.execute(count_stmt).scalar_one()
    rows = session.execute(stmt.offset(page.skip).limit(page.limit)).scalars().all()
    return list(rows), total


def paginate(
    session: Session, stmt: Select[Any], page: PageParams, public: type[BaseModel]
) -> Page[Any]:
    """A page of `stmt`'s rows converted to `public`."""
    rows, total = fetch_page(session, stmt, page)
    return Page[Any](data=[public.model_validate(row) for row in rows], count=total)
