"""AI task logging and notification activities; idempotent by key."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from temporalio import activity

from activities.common import Frozen
from domain import tasklogs


class OpenTaskLogInput(Frozen):
    account_id: int
    function_name: str
    idempotency_key: str
    workflow_id: str | None = None
    model_name: str | None = None
    payload: dict[str, Any] = {}


class TaskLogRef(Frozen):
    task_log_id: int


class CloseTaskLogInput(Frozen):
    task_log_id: int
    status: str
    cost: Decimal = Decimal("0")
    credits_used: int = 0
    result: dict[str, Any] = {}
    error: str | None = None


class NotifyInput(Frozen):
    account_id: int
    notification_type: str
    title: str
    message: str
    idempotency_key: str
    severity: str = "info"
    details: dict[str, Any] = {}
    ai_task_log_id: int | None = None
    related_object_type: str | None = None
    related_object_id: int | None = None


class NotifyOutput(Frozen):
    notification_id: int


class LoggingActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn(name="open_task_log")
    def open_task_log(self, inp: OpenTaskLogInput) -> TaskLogRef:
        task_log_id = tasklogs.open_task_log(
            self.engine,
            account_id=inp.account_id,
            function_name=inp.function_name,
            idempotency_key=inp.idempotency_key,
            workflow_id=inp.workflow_id,
            model_name=inp.model_name,
            payload=inp.payload,
        )
        return TaskLogRef(task_log_id=task_log_id)

    @activity.defn(name="close_task_log")
    def close_task_log(self, inp: CloseTaskLogInput) -> None:
        tasklogs.close_task_log(
            self.engine,
            inp.task_log_id,
            status=inp.status,
            cost=inp.cost,
            credits_used=inp.credits_used,
            result=inp.result,
            error=inp.error,
        )

    @activity.defn(name="notify")
    def notify(self, inp: NotifyInput) -> NotifyOutput:
        note_id = tasklogs.notify(
            self.engine,
            account_id=inp.account_id,
            notification_type=inp.notification_type,
            title=inp.title,
            message=inp.message,
            idempotency_key=inp.idempotency_key,
            severity=inp.severity,
            details=inp.details,
            ai_task_log_id=inp.ai_task_log_id,
            related_object_type=inp.related_object_type,
            related_object_id=inp.related_object_id,
        )
        return NotifyOutput(notification_id=note_id)
