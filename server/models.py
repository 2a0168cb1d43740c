"""The domain's records: plain frozen dataclasses, free of grpc and psycopg."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from server.imaging.filters import FilterStep


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    username: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Credentials:
    """What login needs of a user: never leaves the services."""

    id: UUID
    password_hash: str


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: UUID
    created_at: datetime
    expires_at: datetime


class TaskStatus(StrEnum):
    """Where a task is in its life; the values are those of the ``tasks.status`` column."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in _ENDED


_ENDED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
OUTPUT_FORMATS = ("png", "jpeg", "webp")


@dataclass(frozen=True, slots=True)
class ImageMeta:
    content_type: str
    width: int
    height: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class NewTask:
    """A validated submission, ready to be stored."""

    user_id: UUID
    filters: tuple[FilterStep, ...]
    output_format: str
    image: bytes
    input: ImageMeta
    idempotency_key: str | None
    request_hash: bytes
    request_id: str | None
    max_attempts: int
    trace_context: dict[str, str] | None = None  # W3C traceparent/tracestate of the call
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Task:
    """A task as the API shows it: everything but the image bytes."""

    id: UUID
    user_id: UUID
    status: TaskStatus
    filters: tuple[FilterStep, ...]
    output_format: str
    idempotency_key: str | None
    input: ImageMeta
    result: ImageMeta | None
    error: str | None
    attempts: int
    max_attempts: int
    progress: int
    cancel_requested: bool
    priority: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    images_pruned_at: datetime | None
    # While PENDING, when asked for: an estimate of the tasks that start before it.
    queue_position: int | None = None

    def duration(self, now: datetime) -> timedelta | None:
        """How long it has run: up to ``now`` while RUNNING, up to its end once ended."""
        if self.started_at is None:
            return None
        if self.status is TaskStatus.RUNNING:
            return max(timedelta(0), now - self.started_at)
        if self.finished_at is not None and self.status.ended:
            return max(timedelta(0), self.finished_at - self.started_at)
        return None


@dataclass(frozen=True, slots=True)
class TaskResult:
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed task as a processor sees it: what to run, and the fence of its attempt."""

    task_id: UUID
    attempt: int
    filters: tuple[FilterStep, ...]
    output_format: str
    input_width: int
    input_height: int
    request_id: str | None
    created_at: datetime
    started_at: datetime
    run_after: datetime
    user_id: UUID | None = None
    overtaken: int | None = None  # other users' tasks started while it waited (first attempt)
    trace_context: dict[str, str] | None = None  # of the call that created the task


class TaskEventType(StrEnum):
    """What happened to a task; the values are those of the ``task_events.type`` column
    and of a webhook's ``type``."""

    CREATED = "task.created"
    STARTED = "task.started"
    RETRIED = "task.retried"
    COMPLETED = "task.completed"
    FAILED = "task.failed"
    CANCELLED = "task.cancelled"


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One entry of the outbox: a state change of a task, and the task right after it."""

    id: int
    task_id: UUID
    user_id: UUID
    type: TaskEventType
    created_at: datetime
    task: Task
