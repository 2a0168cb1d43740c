"""Tasks in Postgres, as the API reads and writes them (never the image bytes,
but in ``insert`` and ``get_result_chunk``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from server.imaging.filters import FilterStep
from server.models import ImageMeta, NewTask, Task, TaskStatus
from server.storage.postgres.database import Database
from server.storage.postgres.queue import QueueStats
from server.storage.postgres.replicas import ReadRouter


def task_from_row(
    *,
    id: UUID,
    filters: list[dict[str, Any]],
    status: str,
    input_content_type: str,
    input_width: int,
    input_height: int,
    input_size_bytes: int,
    result_content_type: str | None,
    result_width: int | None,
    result_height: int | None,
    result_size_bytes: int | None,
    **columns: Any,
) -> Task:
    result = None
    if result_content_type is not None:
        result = ImageMeta(
            result_content_type, result_width or 0, result_height or 0, result_size_bytes or 0
        )
    return Task(
        id=id,
        status=TaskStatus(status),
        filters=tuple(FilterStep.from_json(step) for step in filters),
        input=ImageMeta(input_content_type, input_width, input_height, input_size_bytes),
        result=result,
        **columns,
    )


@dataclass(frozen=True, slots=True)
class KeyedTask:
    """The task an idempotency key names, and the fingerprint of its submission."""

    task: Task
    request_hash: bytes


def _keyed_task(*, request_hash: bytes, **columns: Any) -> KeyedTask:
    return KeyedTask(task_from_row(**columns), request_hash)


@dataclass(frozen=True, slots=True)
class Inserted:
    """What an insert did: the new task (None: a repeated idempotency key, or the user's
    pending limit reached), the user's pending tasks before it, and their limit (0: none)."""

    task: Task | None
    queued: int
    max_pending: int

    @property
    def full(self) -> bool:
        return self.max_pending > 0 and self.queued >= self.max_pending


def _inserted(*, queued: int, max_pending: int, **columns: Any) -> Inserted:
    task = None if columns["id"] is None else task_from_row(**columns)
    return Inserted(task, queued, max_pending)


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A task's result, but its bytes (``stored``: whether they are there)."""

    status: str
    result_content_type: str | None
    result_size_bytes: int | None
    images_pruned_at: datetime | None
    stored: bool


def _data(*, data: bytes | None) -> bytes | None:
    return data


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ends: the last task's creation time and id."""

    created_at: datetime
    id: UUID


class TaskRepository:
    """Writes on the primary; the owner's reads through ``reads`` (a replica when it is
    fresh enough for the owner, see :mod:`server.storage.postgres.replicas`)."""

    def __init__(
        self, *, database: Database, reads: ReadRouter | None = None, fair: bool = True
    ) -> None:
        """``fair``: positions are estimated for the fair claim (else oldest first)."""
        self._db = database
        self._reads = reads or ReadRouter(primary=database)
        self._positioned = "get_task_positioned_fair" if fair else "get_task_positioned_fifo"

    async def queue_stats(self) -> QueueStats:
        """Pending and running tasks, and the oldest pending one's age (the queue gauges)."""
        stats = await self._db.fetch_one("queue_stats", {}, QueueStats)
        assert stats is not None  # an aggregate always returns a row
        return stats

    async def insert(self, task: NewTask, *, max_pending: int) -> Inserted | None:
        """Inserts the task unless its idempotency key was used or the user has
        ``max_pending`` tasks pending (0: no limit; user_limits overrides it); None
        when the user is gone."""
        inserted = await self._db.fetch_one(
            "insert_task",
            {
                "user_id": task.user_id,
                "filters": Jsonb([step.to_json() for step in task.filters]),
                "output_format": task.output_format,
                "idempotency_key": task.idempotency_key,
                "request_hash": task.request_hash,
                "request_id": task.request_id,
                "trace_context": None if task.trace_context is None else Jsonb(task.trace_context),
                "image": task.image,
                "content_type": task.input.content_type,
                "width": task.input.width,
                "height": task.input.height,
                "size_bytes": task.input.size_bytes,
                "max_attempts": task.max_attempts,
                "priority": task.priority,
                "max_pending": max_pending,
            },
            _inserted,
        )
        if inserted is not None and inserted.task is not None:
            await self._reads.wrote(task.user_id)
        return inserted

    async def get_by_idempotency_key(self, user_id: UUID, key: str) -> KeyedTask | None:
        return await self._db.fetch_one(
            "get_task_by_idempotency_key",
            {"user_id": user_id, "idempotency_key": key},
            _keyed_task,
        )

    async def get(self, user_id: UUID, task_id: UUID, *, latest: bool = False) -> Task | None:
        """The owner's task; ``latest``: as the primary has it now (a watcher woken by a
        change, whose position nobody knows)."""
        return await self._reads.fetch_one(
            user_id, "get_task", {"id": task_id, "user_id": user_id}, task_from_row, latest=latest
        )

    async def get_positioned(self, user_id: UUID, task_id: UUID) -> Task | None:
        """The owner's task, with its ``queue_position`` while it is pending: an estimate of
        the tasks that start before it (in the same statement, so the same snapshot)."""
        return await self._reads.fetch_one(
            user_id, self._positioned, {"id": task_id, "user_id": user_id}, task_from_row
        )

    async def get_result(self, user_id: UUID, task_id: UUID) -> StoredResult | None:
        return await self._reads.fetch_one(
            user_id, "get_task_result", {"id": task_id, "user_id": user_id}, StoredResult
        )

    async def get_result_chunk(
        self, user_id: UUID, task_id: UUID, *, start: int, length: int
    ) -> bytes | None:
        """``length`` bytes of the result from ``start``; None when it is gone."""
        params = {"id": task_id, "user_id": user_id, "start": start, "length": length}
        data: bytes | None = await self._reads.fetch_one(
            user_id, "get_task_result_chunk", params, _data, binary=True
        )
        return data

    async def list(
        self, user_id: UUID, *, status: TaskStatus | None, after: Cursor | None, limit: int
    ) -> list[Task]:
        return await self._reads.fetch_all(
            user_id,
            "list_tasks",
            {
                "user_id": user_id,
                "status": None if status is None else status.value,
                "after_created_at": None if after is None else after.created_at,
                "after_id": None if after is None else after.id,
                "limit": limit,
            },
            task_from_row,
        )

    async def cancel(self, user_id: UUID, task_id: UUID) -> Task | None:
        """The task after cancelling it; None when it is unknown or has already ended."""
        cancelled = await self._db.fetch_one(
            "cancel_task", {"id": task_id, "user_id": user_id}, task_from_row
        )
        if cancelled is not None:
            await self._reads.wrote(user_id)
        return cancelled
