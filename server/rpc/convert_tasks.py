"""Task messages ↔ the domain's tasks and filter steps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from server.imaging.filters import FilterSpec, FilterStep
from server.models import ImageMeta, Task, TaskEvent, TaskEventType, TaskStatus
from server.rpc.convert import timestamp
from taskgate.v1 import task_service_pb2 as pb

STATUS_TO_PROTO = {
    TaskStatus.PENDING: pb.TASK_STATUS_PENDING,
    TaskStatus.RUNNING: pb.TASK_STATUS_RUNNING,
    TaskStatus.COMPLETED: pb.TASK_STATUS_COMPLETED,
    TaskStatus.FAILED: pb.TASK_STATUS_FAILED,
    TaskStatus.CANCELLED: pb.TASK_STATUS_CANCELLED,
}
EVENT_TYPE_TO_PROTO = {
    TaskEventType.CREATED: pb.TASK_EVENT_TYPE_CREATED,
    TaskEventType.STARTED: pb.TASK_EVENT_TYPE_STARTED,
    TaskEventType.RETRIED: pb.TASK_EVENT_TYPE_RETRIED,
    TaskEventType.COMPLETED: pb.TASK_EVENT_TYPE_COMPLETED,
    TaskEventType.FAILED: pb.TASK_EVENT_TYPE_FAILED,
    TaskEventType.CANCELLED: pb.TASK_EVENT_TYPE_CANCELLED,
}
FORMAT_TO_PROTO = {
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "webp": pb.IMAGE_FORMAT_WEBP,
}
_FORMAT_NAMES: dict[int, str] = {int(value): key for key, value in FORMAT_TO_PROTO.items()}
_STATUSES: dict[int, TaskStatus] = {int(value): key for key, value in STATUS_TO_PROTO.items()}


def step_from_proto(message: pb.Filter) -> FilterStep:
    """The step a Filter message asks for; an unset oneof is a step without a name."""
    name = message.WhichOneof("filter")
    if name is None:
        return FilterStep("", {})
    params = json_format.MessageToDict(
        getattr(message, name),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return FilterStep(name, params)


def step_to_proto(step: FilterStep) -> pb.Filter:
    return json_format.ParseDict(step.to_json(), pb.Filter())


def output_format_from_proto(value: int) -> str:
    """ "" when not given; an unknown number keeps a name that validation rejects."""
    if value == pb.IMAGE_FORMAT_UNSPECIFIED:
        return ""
    return _FORMAT_NAMES.get(value, f"unknown format {value}")


def status_from_proto(value: int) -> TaskStatus | None:
    """None for UNSPECIFIED (every status); ValueError for a number that is no status."""
    if value == pb.TASK_STATUS_UNSPECIFIED:
        return None
    status = _STATUSES.get(value)
    if status is None:
        raise ValueError(value)
    return status


def image_info(meta: ImageMeta) -> pb.ImageInfo:
    return pb.ImageInfo(
        content_type=meta.content_type,
        width=meta.width,
        height=meta.height,
        size_bytes=meta.size_bytes,
    )


def task_to_proto(task: Task, now: datetime) -> pb.Task:
    message = pb.Task(
        task_id=str(task.id),
        status=STATUS_TO_PROTO[task.status],
        filters=[step_to_proto(step) for step in task.filters],
        output_format=FORMAT_TO_PROTO[task.output_format],
        idempotency_key=task.idempotency_key or "",
        input=image_info(task.input),
        error=task.error or "",
        attempts=task.attempts,
        progress=task.progress,
        cancel_requested=task.cancel_requested,
        priority=task.priority,
        create_time=timestamp(task.created_at),
        update_time=timestamp(task.updated_at),
    )
    if task.queue_position is not None:
        message.queue_position = task.queue_position
    if task.result is not None:
        message.result.CopyFrom(image_info(task.result))
    if task.started_at is not None:
        message.start_time.CopyFrom(timestamp(task.started_at))
    if task.finished_at is not None:
        message.end_time.CopyFrom(timestamp(task.finished_at))
    duration = task.duration(now)
    if duration is not None:
        message.duration.CopyFrom(_duration(duration.total_seconds()))
    return message


def event_to_proto(event: TaskEvent) -> pb.TaskEvent:
    """The event, its task as the API showed it at the time of the event."""
    return pb.TaskEvent(
        event_id=event.id,
        task_id=str(event.task_id),
        user_id=str(event.user_id),
        type=EVENT_TYPE_TO_PROTO[event.type],
        create_time=timestamp(event.created_at),
        task=task_to_proto(event.task, event.created_at),
    )


def _duration(seconds: float) -> Duration:
    value = Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def filter_descriptions(catalogue: Sequence[FilterSpec]) -> list[pb.FilterDescription]:
    return [
        pb.FilterDescription(
            name=spec.name,
            description=spec.description,
            parameters=[
                pb.FilterParameter(name=p.name, type=p.type, description=p.description)
                for p in spec.parameters
            ],
        )
        for spec in catalogue
    ]
