"""The outbox in Postgres, as the feed reads it.

Events are written by the statements that change tasks (``queries.sql``: each
state change inserts its event in the same statement); this repository only
reads them, and prunes them after the retention.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from server.models import Task, TaskEvent, TaskEventType
from server.storage.postgres.database import Database
from server.storage.postgres.tasks import task_from_row

_TIMES = ("created_at", "updated_at", "started_at", "finished_at", "images_pruned_at")


def task_from_snapshot(payload: dict[str, Any]) -> Task:
    """The task an event's payload (task_snapshot in ``queries.sql``) holds."""
    columns = dict(payload)
    columns["id"] = UUID(columns["id"])
    columns["user_id"] = UUID(columns["user_id"])
    for name in _TIMES:
        if columns[name] is not None:
            columns[name] = datetime.fromisoformat(columns[name])
    return task_from_row(**columns)


def event_from_row(
    *,
    id: int,
    task_id: UUID,
    user_id: UUID,
    type: str,
    created_at: datetime,
    payload: dict[str, Any],
) -> TaskEvent:
    return TaskEvent(
        id=id,
        task_id=task_id,
        user_id=user_id,
        type=TaskEventType(type),
        created_at=created_at,
        task=task_from_snapshot(payload),
    )


class EventRepository:
    def __init__(self, *, database: Database) -> None:
        self._db = database

    async def list(self, user_id: UUID, *, after: int, limit: int) -> list[TaskEvent]:
        """The user's events with an id above ``after``, oldest first."""
        return await self._db.fetch_all(
            "list_task_events", {"user_id": user_id, "after": after, "limit": limit}, event_from_row
        )
