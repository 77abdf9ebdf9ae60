"""AI task logs and notifications: insert-or-get by idempotency key, so a retried
write never makes a second row."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from models.db import utcnow
from models.logs import AITaskLog, Notification

TASKS = AITaskLog.__table__
NOTES = Notification.__table__


def _insert_or_get(engine: Engine, table: Any, key: str, values: dict[str, Any]) -> int:
    def existing(conn: Connection) -> int | None:
        return conn.execute(
            select(table.c.id).where(table.c.idempotency_key == key)
        ).scalar_one_or_none()

    with engine.begin() as conn:
        found = existing(conn)
        if found is not None:
            return found
        try:
            with conn.begin_nested():
                return conn.execute(
                    insert(table).values(idempotency_key=key, **values).returning(table.c.id)
                ).scalar_one()
        except IntegrityError:
            found = existing(conn)
            if found is None:
                raise
            return found


def open_task_log(
    engine: Engine,
    *,
    account_id: int,
    function_name: str,
    idempotency_key: str,
    workflow_id: str | None,
    model_name: str | None,
    payload: dict[str, Any],
) -> int:
    now = utcnow()
    return _insert_or_get(
        engine,
        TASKS,
        idempotency_key,
        {
            "account_id": account_id,
            "function_name": function_name,
            "phase": "INIT",
            "status": "running",
            "model_name": model_name,
            "cost": Decimal("0"),
            "credits_used": 0,
            "payload": payload,
            "result": {},
            "workflow_id": workflow_id,
            "created_at": now,
            "updated_at": now,
        },
    )


def close_task_log(
    engine: Engine,
    task_log_id: int,
    *,
    status: str,
    cost: Decimal,
    credits_used: int,
    result: dict[str, Any],
    error: str | None,
) -> None:
    """Final state: DONE on success, else the phase stays where it stopped.
    Re-running it writes the same values, so it is idempotent."""
    phase = "DONE" if status == "success" else None
    values: dict[str, Any] = {
        "status": status,
        "cost": cost,
        "credits_used": credits_used,
        "result": result,
        "error": error,
        "updated_at": utcnow(),
    }
    if phase:
        values["phase"] = phase
    with engine.begin() as conn:
        conn.execute(update(TASKS).where(TASKS.c.id == task_log_id).values(**values))


def notify(
    engine: Engine,
    *,
    account_id: int,
    notification_type: str,
    title: str,
    message: str,
    idempotency_key: str,
    severity: str = "info",
    details: dict[str, Any] | None = None,
    ai_task_log_id: int | None = None,
    related_object_type: str | None = None,
    related_object_id: int | None = None,
) -> int:
    return _insert_or_get(
        engine,
        NOTES,
        idempotency_key,
        {
            "account_id": account_id,
            "notification_type": notification_type,
            "title": title,
            "message": message,
            "severity": severity,
            "details": details or {},
            "ai_task_log_id": ai_task_log_id,
            "related_object_type": related_object_type,
            "related_object_id": related_object_id,
            "is_read": False,
            "created_at": utcnow(),
        },
    )
