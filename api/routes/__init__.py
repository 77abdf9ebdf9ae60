"""Routers by resource, gathered into one router mounted under `/api/v1`."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import (
    admin,
    automation,
    automation_config,
    calendar,
    content,
    credits,
    health,
    images,
    keywords,
    logs,
    pipeline,
    sites,
    wordpress,
)

api_router = APIRouter()
for module in (
    health,
    admin,
    credits,
    logs,
    sites,
    automation_config,
    automation,
    keywords,
    pipeline,
    content,
    calendar,
    wordpress,
    images,
):
    api_router.include_router(module.router)

__all__ = ["api_router"]
