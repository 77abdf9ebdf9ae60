"""What happened: one AI task log per AI call, and the notifications users read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentAccountId, SessionDep
from api.errors import error_responses
from api.pagination import Page, PageDep, newest_first, paginate
from api.scoping import get_owned, id_path, owned
from models import AITaskLog, AITaskLogPublic, Notification, NotificationPublic

router = APIRouter(tags=["logs"], responses=error_responses(401))


@router.get("/ai-task-logs", response_model=Page[AITaskLogPublic])
def ai_task_logs(
    account_id: CurrentAccountId,
    session: SessionDep,
    page: PageDep,
    function_name: Annotated[
        str | None, Query(max_length=50, description="e.g. generate_images")
    ] = None,
    status: Annotated[
        str | None, Query(max_length=20, description="pending, running, success, error, cancelled")
    ] = None,
) -> Page[AITaskLogPublic]:
    stmt = owned(AITaskLog, account_id)
    if function_name:
        stmt = stmt.where(AITaskLog.function_name == function_name)
    if status:
        stmt = stmt.where(AITaskLog.status == status)
    return paginate(session, newest_first(stmt, AITaskLog), page, AITaskLogPublic)


@router.get("/notifications", response_model=Page[NotificationPublic])
def notifications(
    account_id: CurrentAccountId,
    session: SessionDep,
    page: PageDep,
    unread: Annotated[bool | None, Query(description="true: only unread ones")] = None,
) -> Page[NotificationPublic]:
    stmt = owned(Notification, account_id)
    if unread is not None:
        stmt = stmt.where(Notification.is_read.is_(not unread))
    return paginate(session, newest_first(stmt, Notification), page, NotificationPublic)


@router.post(
    "/notifications/{notification_id}/read",
    response_model=NotificationPublic,
    responses=error_responses(404),
)
def mark_read(
    notification_id: Annotated[int, id_path("The notification's id")],
    account_id: CurrentAccountId,
    session: SessionDep,
) -> Notification:
    """Idempotent: reading a read notification changes nothing."""
    note = get_owned(session, Notification, notification_id, account_id)
    if not note.is_read:
        note.is_read = True
        session.add(note)
        session.commit()
    return note
