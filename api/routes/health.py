"""Health, three ways:

- `GET /health`: the dependencies, always 200, so a person or a dashboard can tell
  "degraded" apart from "down" by reading the body;
- `GET /health/live`: liveness for an orchestrator: 200 while the process serves
  requests (restart it when this stops answering); it checks nothing else, so an outage of
  the database or Temporal never gets healthy API processes restarted;
- `GET /health/ready`: readiness: 200 only when the database and Temporal both answer,
  else 503 with the same body as `/health` (take the process out of the load balancer).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, Response
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client

from api.deps import EngineDep, TemporalDep
from api.schemas import HealthPublic, LivenessPublic

router = APIRouter(tags=["health"])
logger = logging.getLogger("igny8.api")

TEMPORAL_CHECK_TIMEOUT = timedelta(seconds=2)


def check_database(engine: Engine) -> str:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        # The body is public: name the failure, keep hosts and users for the log.
        logger.warning("Health check: database unreachable: %s", exc)
        return f"error: {type(exc).__name__}"
    return "ok"


async def check_temporal(client: Client | None) -> str:
    if client is None:
        return "unavailable"
    try:
        healthy = await client.service_client.check_health(timeout=TEMPORAL_CHECK_TIMEOUT)
    except Exception:
        return "unavailable"
    return "ok" if healthy else "unavailable"


@router.get("/health", response_model=HealthPublic, summary="Service health")
async def health(engine: EngineDep, temporal: TemporalDep) -> HealthPublic:
    database = await run_in_threadpool(check_database, engine)
    temporal_state = await check_temporal(temporal)
    status = "ok" if database == "ok" and temporal_state == "ok" else "degraded"
    return HealthPublic(status=status, database=database, temporal=temporal_state)


@router.get("/health/live", response_model=LivenessPublic, summary="Liveness probe")
async def live() -> LivenessPublic:
    """200 while the process serves requests; checks no dependency."""
    return LivenessPublic(status="ok")


@router.get(
    "/health/ready",
    response_model=HealthPublic,
    summary="Readiness probe",
    responses={503: {"model": HealthPublic, "description": "The database or Temporal is down"}},
)
async def ready(engine: EngineDep, temporal: TemporalDep, response: Response) -> HealthPublic:
    """200 when the database and Temporal both answer; else 503 saying which did not."""
    body = await health(engine, temporal)
    if body.status != "ok":
        response.status_code = 503
    return body
