"""A site's automation config: batch sizes per stage, models, and the run schedule.

GET answers the defaults while nothing is saved (a site needs no config to run). PUT is a
partial update: fields left out keep their saved (or default) value, null resets a
nullable field (models, `max_in_article_images`: back to the site's; the rest: no cap,
no weekday), and the answer is the whole config. The saved config merged with the
changes is validated as a whole, so a weekly schedule without its weekday is refused
whichever request left it out. Every refusal is a 422 naming the field.
"""

from __future__ import annotations

import functools
from typing import Any

import anyio
from fastapi import APIRouter
from pydantic import ValidationError
from sqlmodel import Session, select
from temporalio.client import Client

from api.deps import SessionDep, SettingsDep, TemporalDep
from api.errors import (
    TemporalUnavailable,
    error_responses,
    readable_errors,
    reject_nulls,
    unprocessable_all,
)
from api.routes.sites import MODEL_FIELDS, check_models
from api.scoping import SiteDep
from models import AutomationConfig, AutomationConfigBase, AutomationConfigPublic
from models.automation import CONFIG_FIELDS, AutomationConfigUpdate
from models.db import utcnow
from models.sites import Site
from workflows.client import sync_schedule

router = APIRouter(prefix="/sites", tags=["automation"], responses=error_responses(401, 404))

PATH = "/{site_id}/automation-config"
NULLABLE_FIELDS = (
    "max_keywords_per_run",
    "text_model",
    "image_model",
    "max_in_article_images",
    "schedule_weekday",
)


def _stored(session: Session, site_id: int) -> AutomationConfig | None:
    stmt = select(AutomationConfig).where(AutomationConfig.site_id == site_id)
    return session.exec(stmt).first()


def _public(site_id: int, row: AutomationConfig | None) -> AutomationConfigPublic:
    if row is None:
        return AutomationConfigPublic(site_id=site_id, **AutomationConfigBase().model_dump())
    return AutomationConfigPublic.model_validate(row.model_dump())


def _changes(body: AutomationConfigUpdate) -> dict[str, Any]:
    """The fields sent; an empty model name means "no override", the same as null."""
    changes = body.model_dump(exclude_unset=True)
    return {k: (None if k in MODEL_FIELDS and not v else v) for k, v in changes.items()}


def _merged(row: AutomationConfig | None, changes: dict[str, Any]) -> AutomationConfigBase:
    """The config as it would be saved, validated whole (errors located in the body)."""
    current = AutomationConfigBase() if row is None else row
    values = {name: getattr(current, name) for name in CONFIG_FIELDS}
    try:
        return AutomationConfigBase.model_validate({**values, **changes})
    except ValidationError as exc:
        errors = readable_errors(exc.errors(include_url=False))
        raise unprocessable_all([{**e, "loc": ["body", *e["loc"]]} for e in errors]) from exc


@router.get(PATH, response_model=AutomationConfigPublic)
def get_automation_config(site: SiteDep, session: SessionDep) -> AutomationConfigPublic:
    """The saved config, or the defaults (`updated_at` null) when none is saved."""
    return _public(site.id, _stored(session, site.id))


@router.put(PATH, response_model=AutomationConfigPublic, responses=error_responses(409, 503))
def put_automation_config(
    site: SiteDep,
    body: AutomationConfigUpdate,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> AutomationConfigPublic:
    """Save the fields sent (see the module docstring); named models must exist, be
    active and be of the field's type. The run schedule becomes (or stops being) a
    Temporal Schedule of the site at once; if Temporal cannot be reached, nothing is
    saved (503)."""
    changes = _changes(body)
    reject_nulls(changes, nullable=NULLABLE_FIELDS)
    check_models(session, changes)
    row = _stored(session, site.id)
    config = _merged(row, changes)
    if row is None:
        row = AutomationConfig(account_id=site.account_id, site_id=site.id)
    if config.schedule_enabled or (row.id is not None and row.schedule_enabled):
        _apply_schedule(temporal, settings.task_queue, site, config)
    row.sqlmodel_update({**config.model_dump(), "updated_at": utcnow()})
    session.add(row)
    session.commit()
    return _public(site.id, row)


def _apply_schedule(
    temporal: Client | None, task_queue: str, site: Site, config: AutomationConfigBase
) -> None:
    """Make the site's Temporal Schedule match the config (from this worker thread, on
    the event loop, where the Temporal client lives)."""
    if temporal is None:
        raise TemporalUnavailable()
    anyio.from_thread.run(
        functools.partial(
            sync_schedule,
            temporal,
            task_queue,
            site.account_id,
            site.id,  # type: ignore[arg-type]
            enabled=config.schedule_enabled,
            frequency=config.schedule_frequency,
            at=config.schedule_time,
            weekday=config.schedule_weekday,
            timezone=site.timezone,
        )
    )
