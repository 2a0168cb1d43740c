"""Logging set-up: one JSON object a line (or plain text for a terminal).

Each record carries the time, level, service name and message and, where
they are bound (:data:`request_id`, :data:`user_id`, :data:`task_id`: the
server binds them inside an RPC and inside a processor's run of a task), the
request id, the user id and the task id; a line written inside a span (see
:mod:`taskgate_runtime.telemetry`) also carries its ``trace_id`` and
``span_id``. Extra fields
given with ``logger.info(..., extra={"fields": {...}})`` are merged into the
object (and win over the context's).

grpc's own loggers are filtered (:class:`GrpcLogFilter`): grpc logs a metadata
value that is not valid UTF-8 whole, with a traceback, at ERROR, once for every
time the metadata is read. That value may be a bearer token, and an anonymous
client chooses its size.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

from taskgate_runtime.telemetry import current_ids

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The request a line is about: a call's, or the one that created the task being run."""
user_id: ContextVar[UUID | None] = ContextVar("user_id", default=None)
"""The calling user, or the owner of the task being run."""
task_id: ContextVar[UUID | None] = ContextVar("task_id", default=None)
"""The task a call (or a processor's run) is about, once known."""

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = request_id.get()
        if request is not None:
            entry["request_id"] = request
        user = user_id.get()
        if user is not None:
            entry["user_id"] = str(user)
        task = task_id.get()
        if task is not None:
            entry["task_id"] = str(task)
        ids = current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(*, service: str, level: str, fmt: str) -> None:
    """Send every log record to stderr, formatted as ``fmt`` (json or text)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    install_grpc_filter()


# grpc's own loggers that log what a client sent (cygrpc: metadata it cannot decode).
GRPC_LOGGERS = ("grpc._cython.cygrpc", "grpc._server", "grpc.aio._server", "grpc._common")
GRPC_MESSAGE_LIMIT = 300


class GrpcLogFilter(logging.Filter):
    """Keeps client-sent values out of grpc's log records, and their volume bounded.

    A record about undecodable metadata becomes one short WARNING without the
    value or the traceback, at most once per ``interval`` seconds (the next one
    says how many were held back). Any other grpc record is cut to
    ``GRPC_MESSAGE_LIMIT`` characters.
    """

    UNDECODABLE: ClassVar[str] = "Invalid encoding on %s"

    def __init__(self, *, interval: float = 10.0, clock: Any = time.monotonic) -> None:
        super().__init__("taskgate-grpc")
        self._interval = interval
        self._clock = clock
        self._next = 0.0
        self._held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self.UNDECODABLE:
            return self._undecodable(record)
        message = record.getMessage()
        if len(message) > GRPC_MESSAGE_LIMIT:
            record.msg, record.args = message[:GRPC_MESSAGE_LIMIT] + "… (cut)", ()
        return True

    def _undecodable(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        if now < self._next:
            self._held_back += 1
            return False
        self._next = now + self._interval
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = "metadata value is not valid UTF-8 (value withheld; %d more held back before)"
        record.args = (self._held_back,)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        self._held_back = 0
        return True


def install_grpc_filter() -> None:
    """Puts one :class:`GrpcLogFilter` on each of grpc's loggers (again: no-op)."""
    shared = GrpcLogFilter()
    for name in GRPC_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, GrpcLogFilter) for f in logger.filters):
            logger.addFilter(shared)
