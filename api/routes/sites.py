"""Sites, their sectors, and the per-site automation and publishing settings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import APIRouter
from sqlmodel import Session, select

from api.deps import CurrentAccountId, SessionDep
from api.errors import error_item, error_responses, reject_nulls, unprocessable, unprocessable_all
from api.pagination import Page, PageDep, fetch_page, newest_first
from api.scoping import SiteDep, owned
from domain.pricing import ModelUnavailable, load_model
from models import Sector, SectorPublic, Site, SiteCreate, SitePublic, SiteUpdate

router = APIRouter(prefix="/sites", tags=["sites"], responses=error_responses(401))

MODEL_FIELDS = {"text_model": "text", "image_model": "image"}
NULLABLE_SETTINGS = ("text_model", "image_model")


def _blank_models_to_none(values: dict[str, Any]) -> dict[str, Any]:
    """An empty model name means "no override", the same as null."""
    return {k: (None if k in MODEL_FIELDS and not v else v) for k, v in values.items()}


def check_models(session: Session, values: Mapping[str, Any]) -> None:
    """Every model a site names must be configured, active, and of the right type."""
    errors = []
    for field_name, model_type in MODEL_FIELDS.items():
        name = values.get(field_name)
        if not name:
            continue
        try:
            load_model(session.connection(), name, model_type)
        except ModelUnavailable as exc:
            errors.append(error_item(str(exc), ("body", field_name), "model_unavailable"))
    if errors:
        raise unprocessable_all(errors)


def _sector_names(names: Iterable[str]) -> list[str]:
    """Trimmed, non-blank, each name once (case-insensitively), in the given order."""
    result: list[str] = []
    seen: set[str] = set()
    for position, raw in enumerate(names):
        name = " ".join(raw.split())
        if not name or len(name) > 200:
            raise unprocessable(
                "sector names must be 1 to 200 characters", ("body", "sectors", position)
            )
        if name.lower() not in seen:
            seen.add(name.lower())
            result.append(name)
    return result


def site_public(site: Site, sectors: Iterable[Sector]) -> SitePublic:
    data = site.model_dump()
    data["sectors"] = [SectorPublic.model_validate(sector) for sector in sectors]
    return SitePublic.model_validate(data)


def _with_sectors(session: Session, site: Site) -> SitePublic:
    stmt = select(Sector).where(Sector.site_id == site.id).order_by(Sector.id)
    return site_public(site, session.exec(stmt).all())


def _sectors_by_site(session: Session, site_ids: list[int]) -> dict[int, list[Sector]]:
    grouped: dict[int, list[Sector]] = {site_id: [] for site_id in site_ids}
    if site_ids:
        stmt = select(Sector).where(Sector.site_id.in_(site_ids)).order_by(Sector.id)
        for sector in session.exec(stmt):
            grouped[sector.site_id].append(sector)
    return grouped


@router.post("", status_code=201, response_model=SitePublic)
def create_site(body: SiteCreate, account_id: CurrentAccountId, session: SessionDep) -> SitePublic:
    """The site and its sectors in one transaction; named models must exist."""
    names = _sector_names(body.sectors)
    data = _blank_models_to_none(body.model_dump(exclude={"sectors"}))
    check_models(session, data)
    site = Site.model_validate({**data, "account_id": account_id})
    session.add(site)
    session.flush()
    sectors = [Sector(account_id=account_id, site_id=site.id, name=name) for name in names]
    session.add_all(sectors)
    session.commit()
    return site_public(site, sectors)


@router.get("", response_model=Page[SitePublic])
def list_sites(
    account_id: CurrentAccountId, session: SessionDep, page: PageDep
) -> Page[SitePublic]:
    rows, total = fetch_page(session, newest_first(owned(Site, account_id), Site), page)
    sectors = _sectors_by_site(session, [site.id for site in rows])
    return Page[SitePublic](data=[site_public(s, sectors[s.id]) for s in rows], count=total)


@router.get("/{site_id}", response_model=SitePublic, responses=error_responses(404))
def get_site(site: SiteDep, session: SessionDep) -> SitePublic:
    return _with_sectors(session, site)


@router.patch("/{site_id}", response_model=SitePublic, responses=error_responses(404))
def update_site(site: SiteDep, body: SiteUpdate, session: SessionDep) -> SitePublic:
    """Change only the fields sent; null clears a model (back to the account default)."""
    changes = _blank_models_to_none(body.model_dump(exclude_unset=True))
    reject_nulls(changes, nullable=NULLABLE_SETTINGS)
    check_models(session, changes)
    site.sqlmodel_update(changes)
    session.add(site)
    session.commit()
    return _with_sectors(session, site)
