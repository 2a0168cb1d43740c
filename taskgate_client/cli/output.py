"""What the commands print: short lines for people, JSON (``--json``) for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from taskgate.v1 import task_service_pb2 as task_pb


def as_dict(message: Message) -> dict[str, Any]:
    """The protobuf JSON mapping, as the HTTP gateway writes it."""
    return json_format.MessageToDict(message)


def emit_json(value: object) -> None:
    print(json.dumps(value, sort_keys=True), flush=True)


def status_name(status: task_pb.TaskStatus.ValueType) -> str:
    return task_pb.TaskStatus.Name(status).removeprefix("TASK_STATUS_").lower()


def describe_filter(spec: task_pb.Filter) -> str:
    name = spec.WhichOneof("filter") or "?"
    options = getattr(spec, name)
    params = ",".join(f"{f.name}={v}" for f, v in options.ListFields())
    return f"{name}:{params}" if params else name


def progress(task: task_pb.Task) -> str:
    """Filters done / filters (what the task's ``progress`` counts)."""
    return f"{task.progress}/{len(task.filters)}"


def task_line(task: task_pb.Task) -> str:
    line = f"{task.task_id}  {status_name(task.status):<9}  {progress(task):>5}"
    filters = " ".join(describe_filter(f) for f in task.filters)
    if task.create_time.seconds:
        line += f"  {task.create_time.ToDatetime().strftime('%Y-%m-%d %H:%M:%S')}Z"
    line += f"  {filters}"
    if task.error:
        line += f"  error: {task.error}"
    return line


def task_details(task: task_pb.Task) -> str:
    rows = [
        ("task", task.task_id),
        ("status", status_name(task.status)),
        ("progress", f"{progress(task)} filters"),
        ("filters", " ".join(describe_filter(f) for f in task.filters)),
        (
            "format",
            task_pb.ImageFormat.Name(task.output_format).removeprefix("IMAGE_FORMAT_").lower(),
        ),
        ("attempts", str(task.attempts)),
    ]
    if task.HasField("input"):
        rows.append(("input", f"{task.input.width}x{task.input.height} {task.input.content_type}"))
    if task.HasField("result"):
        rows.append(
            ("result", f"{task.result.width}x{task.result.height} {task.result.content_type}")
        )
    if task.error:
        rows.append(("error", task.error))
    return "\n".join(f"{key:<9} {value}" for key, value in rows)


def note(text: str) -> None:
    """A line for the person at the terminal (stderr: stdout stays for data)."""
    print(text, file=sys.stderr, flush=True)
