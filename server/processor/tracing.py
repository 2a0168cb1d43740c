"""A task attempt's spans, in the trace of the call that created the task.

CreateTask stores the W3C trace context of its call with the task; every
attempt of the task (a retry too, in whichever processor) is a child of that
call's span: one trace holds the whole life of the task, its retries beside
each other, however long after the call they ran. (A span link would put each
attempt in a trace of its own, found only from the first one.)

- ``task.attempt`` (CONSUMER): from the claim to the fenced end of the attempt;
  attributes ``taskgate.task.id``, ``taskgate.task.attempt``,
  ``taskgate.processor.id``, ``taskgate.task.outcome``;
- ``task.claim``: the claim's round trip (one statement claims a batch: the
  same interval in each claimed task's trace);
- ``filter <name>`` for each filter run, timed from the worker's progress
  reports (the last one includes encoding the result), with
  ``taskgate.filter.index``; a failed filter has an error status;
- the attempt's own statements (its input, its progress) are psycopg's spans,
  and ``task.finish`` is the wait for its fenced ending.

A processor that dies (SIGKILL, a lost host) exports nothing of the attempt
it was running. The processor that rescues the task writes that attempt's
span instead (:func:`lost`): ``task.attempt`` from the attempt's start as
the database recorded it to the rescue, outcome ``lost``, with the dead
processor's id.

The processor's background loops (the exchange, heartbeats, rescues, samples)
run :func:`taskgate_runtime.telemetry.quiet` (no store spans):
they would otherwise make a trace of a few statements every second.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from server.models import Job
from server.processor.workers import Cancelled, Crashed, Done, Failed, Outcome
from server.storage.postgres.queue import Rescued
from taskgate_runtime import telemetry

_tracer = trace.get_tracer("taskgate.processor")


@contextlib.contextmanager
def attempt(job: Job, *, processor: str, claim_sent: int, claimed: int) -> Iterator[Span]:
    """The attempt's span, current inside; the claim's round trip as its first child.

    ``claim_sent`` and ``claimed`` are ``time.time_ns()`` around the claim.
    The context is replaced, not extended: the suppression of the loop that
    claimed the task does not reach the task's own statements.
    """
    parent = telemetry.context_of(job.trace_context) or otel_context.Context()
    token = otel_context.attach(parent)
    try:
        span = _tracer.start_span(
            "task.attempt",
            kind=SpanKind.CONSUMER,
            start_time=claim_sent,
            attributes={
                "taskgate.task.id": str(job.task_id),
                "taskgate.task.attempt": job.attempt,
                "taskgate.task.filters": len(job.filters),
                "taskgate.processor.id": processor,
            },
        )
        inner = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            if span.is_recording():
                _tracer.start_span("task.claim", start_time=claim_sent).end(end_time=claimed)
            yield span
        finally:
            otel_context.detach(inner)
            span.end()
    finally:
        otel_context.detach(token)


def lost(task: Rescued) -> None:
    """The span of an attempt whose processor died, written by the one that rescued it."""
    parent = telemetry.context_of(task.trace_context)
    if parent is None:
        return
    start = None if task.started_at is None else int(task.started_at.timestamp() * 1e9)
    span = _tracer.start_span(
        "task.attempt",
        context=parent,
        kind=SpanKind.CONSUMER,
        start_time=start,
        attributes={
            "taskgate.task.id": str(task.task_id),
            "taskgate.task.attempt": task.attempt,
            "taskgate.processor.id": task.lost_owner or "",
            "taskgate.task.outcome": "lost",
            "taskgate.task.status_after": task.status,
        },
    )
    span.set_status(Status(StatusCode.ERROR, "the processor stopped extending its lease"))
    span.end()


def finishing() -> contextlib.AbstractContextManager[Span]:
    return _tracer.start_as_current_span("task.finish")


def outcome(span: Span, name: str, error: str | None = None) -> None:
    """Records how the attempt ended (completed, failed, cancelled, retried, released)."""
    if not span.is_recording():
        return
    span.set_attribute("taskgate.task.outcome", name)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))


class FilterSpans:
    """One span per filter, from the pipeline's start and its progress reports."""

    def __init__(self, job: Job) -> None:
        self._names = [step.name for step in job.filters]
        self._recording = trace.get_current_span().is_recording()
        self._done = 0
        self._since = 0

    def started(self) -> None:
        self._since = time.time_ns()

    def reporting(self, on_progress: Callable[[int], None]) -> Callable[[int], None]:
        """``on_progress``, with each report also ending the filters it covers."""
        if not self._recording:
            return on_progress

        def report(done: int) -> None:
            self._upto(done)
            on_progress(done)

        return report

    def ended(self, result: Outcome) -> None:
        """The filters not reported yet: all of them when done, else the one that stopped."""
        if not self._recording:
            return
        match result:
            case Done():
                self._upto(len(self._names))
            case Cancelled():
                self._upto(result.done)
            case Failed() | Crashed():
                self._upto(self._done + 1, error=result.message)

    def _upto(self, done: int, error: str | None = None) -> None:
        now = time.time_ns()
        for index in range(self._done, min(done, len(self._names))):
            last = index == done - 1
            span = _tracer.start_span(
                f"filter {self._names[index]}",
                start_time=self._since,
                attributes={"taskgate.filter.name": self._names[index],
                            "taskgate.filter.index": index},
            )  # fmt: skip
            if last and error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
            span.end(end_time=now)
            self._since = now
        self._done = max(self._done, min(done, len(self._names)))
