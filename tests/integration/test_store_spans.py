"""Each SQL statement and Redis call traced in a recorded span gets its CLIENT span
(taskgate_runtime.telemetry.client_span), on the real Postgres and Redis: stable
database conventions, the statement's text but never its parameters, no Redis
key, errors marked (an answer or the caller's deadline only named), and nothing
at all below an unsampled span or in a quiet block."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from server.config import Settings
from server.errors import DeadlineExceeded
from server.storage.errors import StorageUnavailable, UniqueViolation
from server.storage.postgres.database import Database
from server.storage.redis.client import create_client
from server.storage.redis.keys import RedisKeys
from server.storage.redis.sessions import SessionRepository
from taskgate_runtime import telemetry
from tests.support.queue import queue_database


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    """A provider of the test's own, as configure() would set it: every root sampled."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampling.ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setitem(telemetry._state, "tracer", provider.get_tracer("taskgate.storage"))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    async with queue_database(settings, size=2) as db:
        yield db


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[SessionRepository]:
    redis = create_client(settings.redis_url.get_secret_value(), timeout=1)
    try:
        yield SessionRepository(redis=redis, keys=RedisKeys(settings.redis_key_prefix), timeout=1)
    finally:
        await redis.aclose()


def _below(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


async def test_a_statement_is_a_client_span_with_its_text_and_never_its_parameters(
    database: Database, spans: tuple[trace.Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    username = f"span-{secrets.token_hex(4)}"
    with tracer.start_as_current_span("call") as call:
        await database.fetch_one(
            "insert_user", {"username": username, "password_hash": "secret-hash"}, dict
        )
    (span,) = _below(exporter, call)  # type: ignore[arg-type]
    assert span.kind is SpanKind.CLIENT
    assert span.name == "INSERT insert_user"
    attributes = dict(span.attributes or {})
    assert attributes["db.system.name"] == "postgresql"
    assert attributes["db.operation.name"] == "INSERT"
    assert attributes["db.query.summary"] == "INSERT insert_user"
    assert "INSERT INTO users" in str(attributes["db.query.text"])
    assert attributes["server.address"] == "127.0.0.1"
    assert isinstance(attributes["server.port"], int)
    assert attributes["db.namespace"]
    text = " ".join(str(value) for value in attributes.values())
    assert username not in text  # no parameter
    assert "secret-hash" not in text
    assert span.status.status_code is StatusCode.UNSET

    # The same username again: a unique violation is an answer, named but no error.
    with tracer.start_as_current_span("again") as again, pytest.raises(UniqueViolation):
        await database.fetch_one("insert_user", {"username": username, "password_hash": "x"}, dict)
    (span,) = _below(exporter, again)  # type: ignore[arg-type]
    assert span.attributes is not None
    assert span.attributes["error.type"] == "UniqueViolation"
    assert span.attributes["db.response.status_code"] == "23505"
    assert span.status.status_code is StatusCode.UNSET


async def test_a_failing_statement_marks_its_span_as_an_error(
    database: Database, spans: tuple[trace.Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    with tracer.start_as_current_span("call") as call, pytest.raises(psycopg.DataError):
        await database.fetch_one("get_user", {"id": "not a uuid"}, dict)
    (span,) = _below(exporter, call)  # type: ignore[arg-type]
    assert span.name == "SELECT get_user"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "InvalidTextRepresentation"
    assert span.attributes["db.response.status_code"] == "22P02"


async def test_statements_pipelined_together_are_one_batch_span(
    database: Database, spans: tuple[trace.Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    user = {"id": uuid4()}
    with tracer.start_as_current_span("call") as call:
        await database.fetch_all_pipelined([("get_user", user, dict), ("ping", {}, dict)])
    (span,) = _below(exporter, call)  # type: ignore[arg-type]
    assert span.name == "SELECT get_user+ping"
    assert span.attributes is not None
    assert span.attributes["db.operation.batch.size"] == 2


async def test_no_span_below_an_unsampled_span_outside_any_span_or_in_a_quiet_block(
    database: Database, spans: tuple[trace.Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    unsampled = TracerProvider(sampler=sampling.ALWAYS_OFF).get_tracer("off")
    with unsampled.start_as_current_span("not sampled"):
        await database.ping()
    await database.ping()  # no current span: a store call never starts a trace
    with tracer.start_as_current_span("call"), telemetry.quiet():
        await database.ping()
    assert [s.name for s in exporter.get_finished_spans()] == ["call"]


async def test_a_redis_call_is_a_client_span_with_its_command_and_no_key(
    sessions: SessionRepository, spans: tuple[trace.Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    session_id = secrets.token_urlsafe(16)
    with tracer.start_as_current_span("call") as call:
        assert await sessions.owner(session_id) is None
    (span,) = _below(exporter, call)  # type: ignore[arg-type]
    assert span.kind is SpanKind.CLIENT
    assert span.name == "HMGET"
    attributes = dict(span.attributes or {})
    assert attributes["db.system.name"] == "redis"
    assert attributes["db.operation.name"] == "HMGET"
    assert attributes["taskgate.redis.call"] == "session_owner"
    assert attributes["server.address"] == "127.0.0.1"
    assert session_id not in " ".join(str(value) for value in attributes.values())


async def test_a_redis_call_past_the_callers_deadline_is_named_not_an_error(
    sessions: SessionRepository, spans: tuple[trace.Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    with tracer.start_as_current_span("call") as call:
        with pytest.raises(DeadlineExceeded):
            async with sessions._call("session_owner"):
                raise DeadlineExceeded("the caller's deadline")
        with pytest.raises(StorageUnavailable):
            async with sessions._call("session_get"):
                raise OSError("connection refused")
        with pytest.raises(asyncio.CancelledError):
            async with sessions._call("ping"):
                raise asyncio.CancelledError
    deadline, outage, cancelled = sorted(
        _below(exporter, call),  # type: ignore[arg-type]
        key=lambda s: s.start_time or 0,
    )
    assert deadline.attributes is not None
    assert outage.attributes is not None
    assert deadline.attributes["error.type"] == "DeadlineExceeded"
    assert deadline.status.status_code is StatusCode.UNSET
    assert outage.attributes["error.type"] == "StorageUnavailable"
    assert outage.status.status_code is StatusCode.ERROR
    assert cancelled.attributes is not None
    assert cancelled.attributes["error.type"] == "cancelled"
    assert cancelled.status.status_code is StatusCode.UNSET
