"""Submitting, reading, listing, cancelling and watching tasks.

Everything a submission must satisfy is checked here before it is stored:
the image (format, bytes, pixels and colour mode, from its header alone: the
processor decodes it, so a call costs a few kilobytes of parsing whatever the
image declares), the pipeline (1-20 filters, each parameter in range, and no
step producing more pixels than allowed) and the priority, with one field
violation per bad field. A user with their limit of pending tasks is refused
(RESOURCE_EXHAUSTED with the quota and when to retry). Another user's task is
NOT_FOUND, as if it did not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from server import context
from server.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    QuotaViolation,
    ResourceExhausted,
)
from server.imaging.filters import CATALOGUE, FilterSpec, FilterStep
from server.imaging.images import probe
from server.imaging.pipeline import validate_pipeline
from server.metrics import TaskMetrics
from server.models import OUTPUT_FORMATS, ImageMeta, NewTask, Task, TaskResult, TaskStatus
from server.request_rules import declared, field_rule
from server.services import page_tokens
from server.services.rules import parse_uuid, string_violations
from server.services.task_events import TaskEvents
from server.storage.postgres.tasks import Cursor, Inserted, StoredResult, TaskRepository
from taskgate.v1 import task_service_pb2
from taskgate_runtime import telemetry

IDEMPOTENCY_KEY = field_rule(task_service_pb2.CreateTaskRequest, "idempotency_key")
IDEMPOTENCY_KEY_MAX = declared(IDEMPOTENCY_KEY.max_len, "idempotency_key's max_len")
PAGE_SIZE = field_rule(task_service_pb2.ListTasksRequest, "page_size")
_UNBOUNDED = (2**31 - 1, 2**31 - 1)  # an image every crop fits in
PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 20, 100
# A result download's chunk: well under every client's 4 MiB receive limit.
RESULT_CHUNK_BYTES = 1024 * 1024
_HTTP_BODY_OVERHEAD = 1024  # the content type and the framing of a chunk's message


def result_chunk_bytes(max_send_bytes: int) -> int:
    """The chunk of a result download on a server that sends at most ``max_send_bytes``
    a message."""
    return max(1, min(RESULT_CHUNK_BYTES, max_send_bytes - _HTTP_BODY_OVERHEAD))


PRIORITY = field_rule(task_service_pb2.CreateTaskRequest, "priority")
PRIORITY_MIN = int(declared(PRIORITY.minimum, "priority's minimum"))
PRIORITY_MAX = int(declared(PRIORITY.maximum, "priority's maximum"))


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TaskLimits:
    max_image_bytes: int
    max_pixels: int
    max_attempts: int
    watch_poll_interval: float
    result_chunk_bytes: int = RESULT_CHUNK_BYTES
    max_pending: int = 0  # each user's pending tasks (0: no limit; user_limits overrides)
    pending_retry_after: float = 5.0  # what a refusal at max_pending suggests


@dataclass(frozen=True, slots=True)
class Submission:
    """A CreateTask request in the domain's terms. ``output_format`` is "" when not given."""

    image: bytes
    filters: Sequence[FilterStep]
    output_format: str
    idempotency_key: str
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    tasks: list[Task]
    next_page_token: str


def idempotency_key_violations(key: str) -> list[FieldViolation]:
    return string_violations(key, IDEMPOTENCY_KEY, "idempotency_key")


def output_format_violations(output_format: str) -> list[FieldViolation]:
    if output_format and output_format not in OUTPUT_FORMATS:
        return [FieldViolation("output_format", "must be PNG, JPEG or WEBP")]
    return []


def priority_violations(priority: int) -> list[FieldViolation]:
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        return [
            FieldViolation(
                "priority", f"must be from {PRIORITY_MIN} to {PRIORITY_MAX} (higher runs first)"
            )
        ]
    return []


def request_hash(submission: Submission) -> bytes:
    """The fingerprint that tells a retried submission from another one with the same key."""
    digest = hashlib.sha256()
    steps = [step.to_json() for step in submission.filters]
    fields: list[object] = [steps, submission.output_format or "png"]
    if submission.priority:  # left out at the default: keys stored before priorities still match
        fields.append(submission.priority)
    digest.update(json.dumps(fields, sort_keys=True).encode())
    digest.update(submission.image)
    return digest.digest()


class TaskService:
    def __init__(
        self,
        *,
        tasks: TaskRepository,
        events: TaskEvents,
        limits: TaskLimits,
        metrics: TaskMetrics,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._tasks = tasks
        self._events = events
        self._limits = limits
        self._metrics = metrics
        self.clock = clock

    @staticmethod
    def filters() -> Sequence[FilterSpec]:
        return CATALOGUE

    async def create(self, caller: UUID, submission: Submission) -> Task:
        meta = await self._validate(submission)
        key = submission.idempotency_key or None
        fingerprint = request_hash(submission) if key else b""
        new = NewTask(
            user_id=caller,
            filters=tuple(submission.filters),
            output_format=submission.output_format or "png",
            image=submission.image,
            input=meta,
            idempotency_key=key,
            request_hash=fingerprint,
            request_id=context.request_id.get(),
            max_attempts=self._limits.max_attempts,
            trace_context=telemetry.carrier() or None,
            priority=submission.priority,
        )
        inserted = await self._tasks.insert(new, max_pending=self._limits.max_pending)
        if inserted is None:
            raise NotFound("the user no longer exists")
        if inserted.task is not None:
            context.task_id.set(inserted.task.id)
            self._metrics.created.inc()
            return inserted.task
        if key is not None and (earlier := await self._earlier(caller, key, fingerprint)):
            context.task_id.set(earlier.id)
            return earlier
        raise self._refused(caller, inserted)

    def _refused(self, caller: UUID, inserted: Inserted) -> ResourceExhausted:
        self._metrics.refused.labels("max_pending").inc()
        limit = inserted.max_pending
        return ResourceExhausted(
            f"you have {inserted.queued} tasks waiting, the most allowed is {limit}; "
            "submit more once some have started",
            retry_after=self._limits.pending_retry_after,
            quota=(
                QuotaViolation(
                    f"user:{caller}", f"at most {limit} pending tasks per user (max_pending)"
                ),
            ),
        )

    async def _earlier(self, caller: UUID, key: str, fingerprint: bytes) -> Task | None:
        """The task made earlier with this key; None if there is none (the insert was
        refused by the pending limit)."""
        keyed = await self._tasks.get_by_idempotency_key(caller, key)
        if keyed is None:
            return None
        if keyed.request_hash != fingerprint:
            raise AlreadyExists(
                "idempotency_key was already used for a different submission "
                f"(task {keyed.task.id}); use a new key for a new task"
            )
        return keyed.task

    async def _validate(self, submission: Submission) -> ImageMeta:
        """The input image's metadata, or INVALID_ARGUMENT with every bad field."""
        violations = output_format_violations(submission.output_format)
        violations += idempotency_key_violations(submission.idempotency_key)
        violations += priority_violations(submission.priority)
        info = None
        try:
            # The header only (no pixels): a thread, as a TIFF's or a PNG's
            # header chunks may take a few milliseconds to read.
            info = await asyncio.to_thread(
                probe,
                submission.image,
                max_bytes=self._limits.max_image_bytes,
                max_pixels=self._limits.max_pixels,
            )
        except InvalidArgument as exc:
            violations = exc.violations + violations
        if info is not None:
            violations += validate_pipeline(
                submission.filters,
                (info.width, info.height),
                max_pixels=self._limits.max_pixels,
                output_format=submission.output_format or "png",
            )
        else:  # no size to follow through the steps: their parameters alone
            violations += validate_pipeline(submission.filters, _UNBOUNDED, max_pixels=2**62)
        if violations or info is None:
            raise InvalidArgument(violations)
        return ImageMeta(info.content_type, info.width, info.height, info.size_bytes)

    async def get(self, caller: UUID, task_id: str) -> Task:
        """The task; while PENDING with its estimated ``queue_position``."""
        task = await self._tasks.get_positioned(caller, _task_id(task_id))
        if task is None:
            raise NotFound(f"task {task_id!r} not found")
        return task

    async def _get(self, caller: UUID, task_id: UUID, given: str, *, latest: bool = False) -> Task:
        task = await self._tasks.get(caller, task_id, latest=latest)
        if task is None:
            raise NotFound(f"task {given!r} not found")
        return task

    async def result(self, caller: UUID, task_id: str) -> AsyncIterator[TaskResult]:
        """The result of a COMPLETED task, in chunks of at most ``result_chunk_bytes``,
        each read from the database as it is wanted: a download holds one chunk at a
        time, whatever the size of the result."""
        target = _task_id(task_id)
        stored = await self._tasks.get_result(caller, target)
        if stored is None:
            raise NotFound(f"task {task_id!r} not found")
        content_type = _result_content_type(stored)
        size, chunk = stored.result_size_bytes or 0, self._limits.result_chunk_bytes
        for start in range(0, max(size, 1), chunk):
            length = min(chunk, size - start)
            data = await self._tasks.get_result_chunk(caller, target, start=start, length=length)
            if data is None:
                raise FailedPrecondition("the result was deleted while it was being read")
            yield TaskResult(content_type=content_type, data=data)

    async def list(
        self, caller: UUID, *, page_size: int, page_token: str, status: TaskStatus | None
    ) -> Page:
        if PAGE_SIZE.minimum is not None and page_size < PAGE_SIZE.minimum:
            raise InvalidArgument.field("page_size", f"must be {PAGE_SIZE.minimum:g} or more")
        limit = min(page_size or PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX)
        status_code = _STATUS_CODES[status]
        after = page_tokens.decode(page_token, status_code) if page_token else None
        tasks = await self._tasks.list(caller, status=status, after=after, limit=limit + 1)
        next_token = ""
        if len(tasks) > limit:
            tasks = tasks[:limit]
            last = tasks[-1]
            next_token = page_tokens.encode(Cursor(last.created_at, last.id), status_code)
        return Page(tasks=tasks, next_page_token=next_token)

    async def cancel(self, caller: UUID, task_id: str) -> Task:
        target = _task_id(task_id)
        task = await self._tasks.cancel(caller, target)
        if task is None:
            current = await self._get(caller, target, task_id)
            raise FailedPrecondition(
                f"the task has already ended ({current.status.value.upper()}): "
                "only a PENDING or RUNNING task can be cancelled"
            )
        if task.status is TaskStatus.CANCELLED:
            self._metrics.finished.labels(TaskStatus.CANCELLED.value).inc()
        return task

    async def watch(self, caller: UUID, task_id: str) -> AsyncIterator[Task]:
        """The task now, then after each change of status, progress or cancellation,
        until it has ended."""
        target = _task_id(task_id)
        with self._events.watching(str(target)) as changed:
            last: tuple[object, ...] | None = None
            notified = False
            while True:
                changed.clear()  # before the read: a change after it sets the event again
                task = await self._get(caller, target, task_id, latest=notified)
                state = (task.status, task.progress, task.cancel_requested, task.attempts)
                if state != last:
                    last = state
                    yield task
                if task.status.ended:
                    return
                # A lost notification costs at most one poll interval.
                try:
                    async with asyncio.timeout(self._limits.watch_poll_interval):
                        notified = await changed.wait()
                except TimeoutError:
                    notified = False


def _result_content_type(stored: StoredResult) -> str:
    """The content type of a result that can be read; FAILED_PRECONDITION otherwise."""
    if stored.status != TaskStatus.COMPLETED.value:
        raise FailedPrecondition(
            f"the task is {stored.status.upper()}: only a COMPLETED task has a result"
        )
    if not stored.stored or stored.result_content_type is None:
        raise FailedPrecondition(
            "the result was deleted after the retention period "
            f"({stored.images_pruned_at:%Y-%m-%d})"
            if stored.images_pruned_at is not None
            else "the task has no result"
        )
    return stored.result_content_type


def _task_id(given: str) -> UUID:
    """The task id a call names, bound for its log lines."""
    task_id = parse_uuid(given, "task_id")
    context.task_id.set(task_id)
    return task_id


_STATUS_CODES: dict[TaskStatus | None, int] = {
    None: 0,
    **{status: index for index, status in enumerate(TaskStatus, start=1)},
}
