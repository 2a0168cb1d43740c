"""The task queue in Postgres, as processors use it.

Claims take due tasks with ``FOR UPDATE SKIP LOCKED`` and count the attempt in
the same statement; every later change is fenced on the job's lease (owner,
attempt, still running), so a processor that lost its lease can change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from server.imaging.filters import FilterStep
from server.models import Job, TaskStatus
from server.storage.postgres.database import Database


def _job(*, filters: list[dict[str, Any]], **columns: Any) -> Job:
    return Job(filters=tuple(FilterStep.from_json(step) for step in filters), **columns)


@dataclass(frozen=True, slots=True)
class Lease:
    id: UUID
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class Rescued:
    task_id: UUID
    status: str
    user_id: UUID
    request_id: str | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    pending: int
    running: int
    oldest_pending_seconds: float


@dataclass(frozen=True, slots=True)
class Output:
    """What a finished pipeline produced."""

    data: bytes
    content_type: str
    width: int
    height: int


def _value(**columns: Any) -> Any:
    (value,) = columns.values()
    return value


class QueueRepository:
    def __init__(self, *, database: Database, owner: str, lease: float) -> None:
        """``owner`` names this processor in leases and attempt rows."""
        self._db = database
        self.owner = owner
        self._lease = lease

    def _fence(self, job: Job) -> dict[str, Any]:
        return {"id": job.task_id, "owner": self.owner, "attempt": job.attempt}

    async def claim(self, limit: int) -> list[Job]:
        return await self._db.fetch_all(
            "claim_tasks", {"limit": limit, "owner": self.owner, "lease": self._lease}, _job
        )

    async def next_run_after(self) -> datetime | None:
        """When the next task waiting out a backoff becomes due; None when none waits."""
        value: datetime | None = await self._db.fetch_one("next_run_after", {}, _value)
        return value

    async def input_image(self, job: Job) -> bytes | None:
        """The job's input; None when the lease is no longer this processor's."""
        data: bytes | None = await self._db.fetch_one(
            "get_job_input", self._fence(job), _value, binary=True
        )
        return data

    async def record_progress(self, job: Job, done: int) -> bool | None:
        """Whether cancellation was asked; None when the lease is lost."""
        cancel: bool | None = await self._db.fetch_one(
            "record_progress", {**self._fence(job), "progress": done}, _value
        )
        return cancel

    async def complete(self, job: Job, output: Output, *, claim: int = 0) -> tuple[bool, list[Job]]:
        """Stores the result (False when the lease is lost: someone else owns the task
        now) and, in the same round trip, claims up to ``claim`` more tasks."""
        finish = (
            "finish_task",
            self._finish_params(job, TaskStatus.COMPLETED, None, output),
            _value,
        )
        if claim <= 0:
            return bool(await self._db.fetch_one(*finish)), []
        claimed = ("claim_tasks", {"limit": claim, "owner": self.owner, "lease": self._lease}, _job)
        (finished,), jobs = await self._db.fetch_all_pipelined([finish, claimed])
        return bool(finished), jobs

    async def end(self, job: Job, status: TaskStatus, error: str) -> bool:
        """Ends the task FAILED or CANCELLED; False when the lease is lost."""
        params = self._finish_params(job, status, error, None)
        return bool(await self._db.fetch_one("finish_task", params, _value))

    def _finish_params(
        self, job: Job, status: TaskStatus, error: str | None, output: Output | None
    ) -> dict[str, Any]:
        return {
            **self._fence(job),
            "status": status.value,
            "error": error,
            "image": None if output is None else output.data,
            "content_type": None if output is None else output.content_type,
            "width": None if output is None else output.width,
            "height": None if output is None else output.height,
            "size_bytes": None if output is None else len(output.data),
        }

    async def retry(self, job: Job, error: str, *, delay: float) -> TaskStatus | None:
        """Back to PENDING after ``delay`` (FAILED once the attempts are used up)."""
        return await self._requeue(job, "error", error, delay)

    async def release(self, job: Job) -> TaskStatus | None:
        """Hands the task back at shutdown: PENDING and due at once."""
        return await self._requeue(job, "released", "handed back at processor shutdown", 0.0)

    async def _requeue(self, job: Job, outcome: str, error: str, delay: float) -> TaskStatus | None:
        params = {**self._fence(job), "outcome": outcome, "error": error, "delay": delay}
        status = await self._db.fetch_one("requeue_task", params, _value)
        return None if status is None else TaskStatus(status)

    async def extend_leases(self, task_ids: list[UUID]) -> list[Lease]:
        """Extends the leases still held among ``task_ids``; the rest were lost."""
        return await self._db.fetch_all(
            "extend_leases", {"ids": task_ids, "owner": self.owner, "lease": self._lease}, Lease
        )

    async def rescue_expired(
        self, *, backoff: float, backoff_max: float, limit: int = 100
    ) -> list[Rescued]:
        return await self._db.fetch_all(
            "rescue_expired",
            {"backoff": backoff, "backoff_max": backoff_max, "limit": limit},
            Rescued,
        )

    async def prune_images(self, *, retention: float, limit: int = 500) -> int:
        return await self._db.execute("prune_images", {"retention": retention, "limit": limit})

    async def stats(self) -> QueueStats:
        stats = await self._db.fetch_one("queue_stats", {}, QueueStats)
        assert stats is not None  # an aggregate always returns a row
        return stats
