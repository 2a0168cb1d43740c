"""The task queue in Postgres, as processors use it.

Claims take due tasks with ``FOR UPDATE SKIP LOCKED`` and count the attempt in
the same statement: fairly (``claim_tasks_fair``: in turns across users, each
user's tasks by priority then age, within the user's running limit) or, with
fairness off, oldest first (``claim_tasks_fifo``); their inputs are read in the
same round trip, by a statement of their own. Every later change is fenced on
the job's lease (owner, attempt, still running), so a processor that lost its
lease can change nothing. The users' pending and running counts (user_queues)
are kept by triggers on tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from server.imaging.filters import FilterStep
from server.models import Job, TaskStatus
from server.storage.postgres.database import Database

# The slowest a healthy Postgres is assumed to take in a result's bytes: a
# finishing statement gets that much more time than the configured timeout
# (a 32 MiB result: 4 s more).
RESULT_WRITE_BYTES_PER_SECOND = 8 * 1024 * 1024


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
    attempt: int  # the one that was lost
    trace_context: dict[str, str] | None
    started_at: datetime | None  # when the lost attempt began
    lost_owner: str | None  # the processor that held it


@dataclass(frozen=True, slots=True)
class QueueStats:
    pending: int
    running: int
    oldest_pending_seconds: float
    users_pending: int  # users with at least one pending task
    largest_backlog: int  # the most pending tasks of one user


@dataclass(frozen=True, slots=True)
class Output:
    """What a finished pipeline produced."""

    data: bytes
    content_type: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Ending:
    """How an attempt ends its task: COMPLETED with an output, FAILED or CANCELLED
    with the reason."""

    job: Job
    status: TaskStatus
    error: str | None = None
    output: Output | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed job and its input (None if it could not be read with the claim)."""

    job: Job
    image: bytes | None


@dataclass(frozen=True, slots=True)
class _Input:
    task_id: UUID
    image: bytes


def _value(**columns: Any) -> Any:
    (value,) = columns.values()
    return value


class QueueRepository:
    def __init__(
        self,
        *,
        database: Database,
        owner: str,
        lease: float,
        fair: bool = True,
        max_running: int = 0,
    ) -> None:
        """``owner`` names this processor in leases and attempt rows; ``fair`` claims in
        turns across users (else oldest first); ``max_running`` is the default of
        each user's running tasks at once (0: no limit; user_limits overrides it)."""
        self._db = database
        self.owner = owner
        self._lease = lease
        self._claim = "claim_tasks_fair" if fair else "claim_tasks_fifo"
        self._max_running = max_running

    def _fence(self, job: Job) -> dict[str, Any]:
        return {"id": job.task_id, "owner": self.owner, "attempt": job.attempt}

    async def claim(self, limit: int) -> list[Claimed]:
        """Claims up to ``limit`` due tasks, with their inputs, in one round trip."""
        _, claimed = await self.finish([], claim=limit)
        return claimed

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

    async def finish(
        self, endings: Sequence[Ending], *, claim: int = 0
    ) -> tuple[set[UUID], list[Claimed]]:
        """Ends attempts and claims up to ``claim`` more tasks, in one round trip and
        one transaction (libpq pipeline mode): the slots the ended tasks free are taken
        by their successors as they free up.

        Returns the tasks that ended (an attempt whose lease was lost ends nothing:
        someone else owns its task now) and the claimed jobs with their inputs.
        """
        statements: list[tuple[str, dict[str, Any], Callable[..., Any]]] = []
        if endings:
            statements.append(("finish_tasks", self._endings(endings), _value))
        if claim > 0:
            owner = {"owner": self.owner}
            limits = {"limit": claim, "lease": self._lease, "max_running": self._max_running}
            statements.append((self._claim, {**owner, **limits}, _job))
            statements.append(("claimed_inputs", owner, _Input))
        if not statements:
            return set(), []
        written = sum(len(e.output.data) for e in endings if e.output is not None)
        results = await self._db.fetch_all_pipelined(
            statements, binary=True, extra_time=written / RESULT_WRITE_BYTES_PER_SECOND
        )
        ended: set[UUID] = set(results[0]) if endings else set()
        if claim <= 0:
            return ended, []
        jobs, inputs = results[-2:]
        images = {i.task_id: i.image for i in inputs}
        return ended, [Claimed(job, images.get(job.task_id)) for job in jobs]

    def _endings(self, endings: Sequence[Ending]) -> dict[str, Any]:
        outputs = [ending.output for ending in endings]
        return {
            "owner": self.owner,
            "running": TaskStatus.RUNNING.value,
            "ids": [ending.job.task_id for ending in endings],
            "attempts": [ending.job.attempt for ending in endings],
            "statuses": [ending.status.value for ending in endings],
            "errors": [ending.error for ending in endings],
            "images": [None if o is None else o.data for o in outputs],
            "content_types": [None if o is None else o.content_type for o in outputs],
            "widths": [None if o is None else o.width for o in outputs],
            "heights": [None if o is None else o.height for o in outputs],
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
