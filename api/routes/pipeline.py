"""Read-only views of a site's pipeline: clusters, ideas, tasks, content, images.

The workflows write these rows; the API only reads them, always through the site (or,
for one piece of content, the account), so another account's data stays invisible.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import Select
from sqlmodel import Session

from api.deps import CurrentAccountId, SessionDep
from api.errors import error_responses
from api.pagination import Page, PageDep, PageParams, newest_first, paginate
from api.schemas import (
    INT32_MAX,
    ClusterPublic,
    ContentIdeaPublic,
    ContentPublic,
    ContentSummary,
    ImagePublic,
    TaskPublic,
)
from api.scoping import SiteDep, get_owned, id_path, owned
from models import Cluster, Content, ContentIdea, Image, Site, Task

router = APIRouter(tags=["pipeline"], responses=error_responses(401, 404))

StatusQuery = Annotated[str | None, Query(max_length=20, description="Only rows in this status")]
ContentStatus = Literal["draft", "review", "approved"]
SiteStatus = Literal["not_published", "scheduled", "publishing", "published", "failed"]
OptionalId = Annotated[int | None, Query(ge=1, le=INT32_MAX)]


def _site_rows(model: Any, site: Site, **equals: Any) -> Select[Any]:
    """The site's rows of `model`, filtered by every keyword argument that is not None."""
    stmt = owned(model, site.account_id).where(model.site_id == site.id)
    for column, value in equals.items():
        if value is not None:
            stmt = stmt.where(getattr(model, column) == value)
    return newest_first(stmt, model)


def _page(
    session: Session, site: Site, page: PageParams, model: Any, public: Any, **equals: Any
) -> Page[Any]:
    return paginate(session, _site_rows(model, site, **equals), page, public)


@router.get("/sites/{site_id}/clusters", response_model=Page[ClusterPublic])
def clusters(
    site: SiteDep, session: SessionDep, page: PageDep, status: StatusQuery = None
) -> Page[Any]:
    return _page(session, site, page, Cluster, ClusterPublic, status=status)


@router.get("/sites/{site_id}/ideas", response_model=Page[ContentIdeaPublic])
def ideas(
    site: SiteDep,
    session: SessionDep,
    page: PageDep,
    status: StatusQuery = None,
    cluster_id: OptionalId = None,
) -> Page[Any]:
    return _page(
        session, site, page, ContentIdea, ContentIdeaPublic, status=status, cluster_id=cluster_id
    )


@router.get("/sites/{site_id}/tasks", response_model=Page[TaskPublic])
def tasks(
    site: SiteDep, session: SessionDep, page: PageDep, status: StatusQuery = None
) -> Page[Any]:
    return _page(session, site, page, Task, TaskPublic, status=status)


@router.get("/sites/{site_id}/content", response_model=Page[ContentSummary])
def content_list(
    site: SiteDep,
    session: SessionDep,
    page: PageDep,
    status: Annotated[ContentStatus | None, Query()] = None,
    site_status: Annotated[SiteStatus | None, Query()] = None,
) -> Page[Any]:
    """Content without its html (fetch one piece for that)."""
    return _page(
        session, site, page, Content, ContentSummary, status=status, site_status=site_status
    )


@router.get("/sites/{site_id}/images", response_model=Page[ImagePublic])
def images(
    site: SiteDep,
    session: SessionDep,
    page: PageDep,
    status: StatusQuery = None,
    task_id: OptionalId = None,
    content_id: OptionalId = None,
) -> Page[Any]:
    return _page(
        session,
        site,
        page,
        Image,
        ImagePublic,
        status=status,
        task_id=task_id,
        content_id=content_id,
    )


@router.get("/content/{content_id}", response_model=ContentPublic)
def content_detail(
    content_id: Annotated[int, id_path("The content's id")],
    account_id: CurrentAccountId,
    session: SessionDep,
) -> ContentPublic:
    return ContentPublic.model_validate(get_owned(session, Content, content_id, account_id))
