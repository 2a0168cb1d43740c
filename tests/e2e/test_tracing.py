"""Traces across the real processes, exported over the network to a real OTLP receiver.

``python -m server`` (no embedded processor), ``python -m server.processor`` and
``python -m gateway`` run with ``OTEL_EXPORTER_OTLP_ENDPOINT`` naming the test's
receiver (:mod:`tests.support.otlp`) and the default sampling (parent-based,
1 % of the roots). A client sends ``POST /v1/tasks`` with a sampled
``traceparent``; its trace must hold the gateway's HTTP span, the server's RPC
span (its child: the gateway sends the traceparent) with its SQL and Redis spans, and the
processor's attempt with its claim, filters and finish, each with the right
parent. A task whose processor is SIGKILLed mid-pipeline shows both attempts
in that one trace: the lost one (written by the processor that rescued it) and
the one that completed.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.support.images import image_bytes
from tests.support.otlp import Collector, Span, collector
from tests.support.polling import eventually
from tests.support.stack import Stack, respawn, running_stack

pytestmark = pytest.mark.timeout(150)

PASSWORD = "correct horse battery"


@pytest.fixture
async def receiver() -> AsyncIterator[Collector]:
    async with collector() as running:
        yield running


def _tracing(receiver: Collector, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not the default 5 s
        **extra,
    }


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


async def _json(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    async with http.request(method, path, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        payload: dict[str, Any] = await response.json()
        return payload


async def _login(http: aiohttp.ClientSession) -> dict[str, str]:
    username = f"user{secrets.token_hex(6)}"
    await _json(http, "POST", "/v1/users", {"username": username, "password": PASSWORD})
    session = await _json(
        http, "POST", "/v1/sessions", {"username": username, "password": PASSWORD}
    )
    return {"Authorization": f"Bearer {session['session']['sessionId']}"}


async def _status(http: aiohttp.ClientSession, task_id: str, auth: Mapping[str, str]) -> str:
    task = await _json(http, "GET", f"/v1/tasks/{task_id}", headers=auth)
    return str(task["task"]["status"])


def _one(spans: list[Span], **wanted: Any) -> Span:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in wanted.items())]
    assert len(found) == 1, (
        f"{wanted}: {len(found)} spans in {[(s.service, s.name) for s in spans]}"
    )
    return found[0]


def _below(spans: list[Span], ancestor: Span) -> list[Span]:
    """Every span under ``ancestor`` (children, grandchildren, ...)."""
    by_id = {span.span_id: span for span in spans}

    def under(span: Span) -> bool:
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            if span.span_id == ancestor.span_id:
                return True
        return False

    return [span for span in spans if under(span)]


async def test_one_create_task_is_one_trace_from_the_client_to_the_processor(
    database_url: str, redis_prefix: str, tmp_path: Path, receiver: Collector
) -> None:
    async with running_stack(
        database_url=database_url,
        redis_url=TEST_REDIS_URL,
        redis_prefix=redis_prefix,
        log_dir=tmp_path,
        **_tracing(receiver),
    ) as stack:
        trace_id, client_span, traceparent = _traceparent()
        async with aiohttp.ClientSession(base_url=stack.http) as http:
            auth = await _login(http)
            body = {
                "image": base64.b64encode(image_bytes(64, 48)).decode(),
                "filters": [{"grayscale": {}}, {"blur": {"radius": 1}}],
            }
            headers = {**auth, "traceparent": traceparent}
            created = await _json(http, "POST", "/v1/tasks", body, headers)
            task_id = created["task"]["taskId"]

            async def completed() -> bool:
                return await _status(http, task_id, auth) == "TASK_STATUS_COMPLETED"

            await eventually(completed, within=30, interval=0.1)
            # A server stream through the traced channel and interceptors.
            async with http.get(f"/v1/tasks/{task_id}:watch", headers=auth) as watch:
                assert watch.status == 200
                assert b"TASK_STATUS_COMPLETED" in await watch.read()

        async def finished_exporting() -> bool:
            return any(s.name == "task.attempt" for s in receiver.trace(trace_id))

        await eventually(finished_exporting, within=20, interval=0.1)
        await asyncio.sleep(0.5)  # the spans ended with it, exported in the same batch or next
        spans = receiver.trace(trace_id)
        token = auth["Authorization"].removeprefix("Bearer ")
        _check_create_task_trace(spans, client_span, task_id, token)
        _check_log_lines(stack, trace_id)
        await _check_exemplars(stack, trace_id)


def _check_create_task_trace(
    spans: list[Span], client_span: str, task_id: str, secret: str
) -> None:
    http_span = _one(spans, service="taskgate-gateway", kind="server")
    assert http_span.parent_id == client_span
    assert http_span.name == "POST /v1/tasks"
    assert http_span.attributes["http.route"] == "/v1/tasks"
    assert http_span.attributes["http.response.status_code"] == 200
    rpc = _one(spans, service="taskgate-server", kind="server")
    assert rpc.parent_id == http_span.span_id  # the gateway sends its span's traceparent
    assert rpc.attributes["rpc.system"] == "grpc"
    assert rpc.attributes["rpc.method"] == "CreateTask"
    inside = _below(spans, rpc)
    sql = [s for s in inside if s.attributes.get("db.system.name", s.attributes.get("db.system"))
           == "postgresql"]  # fmt: skip
    assert any("INSERT INTO tasks" in str(s.attributes.get("db.query.text")) for s in sql), sql
    redis = [s for s in inside if s.attributes.get("db.system") == "redis"
             or s.attributes.get("db.system.name") == "redis"]  # fmt: skip
    assert redis, "the session lookup"
    for span in spans:  # no token, no password, no image bytes in any attribute
        text = " ".join(str(v) for v in span.attributes.values())
        assert secret not in text
        assert PASSWORD not in text
        assert "iVBOR" not in text

    attempt = _one(spans, service="taskgate-processor", name="task.attempt")
    assert attempt.parent_id == rpc.span_id  # the CreateTask call's span, stored with the task
    assert attempt.attributes["taskgate.task.id"] == task_id
    assert attempt.attributes["taskgate.task.attempt"] == 1
    assert attempt.attributes["taskgate.task.outcome"] == "completed"
    children = [s for s in spans if s.parent_id == attempt.span_id]
    names = [s.name for s in sorted(children, key=lambda s: s.start)]
    assert names[0] == "task.claim"
    assert [n for n in names if n.startswith("filter ")] == ["filter grayscale", "filter blur"]
    assert names[-1] == "task.finish"
    assert any(s.service == "taskgate-processor" and s.kind == "client" for s in children), (
        "the attempt's own statement (its progress or input) as a SQL span"
    )
    assert all(not s.error for s in spans)
    assert not [s for s in spans if s.attributes.get("db.query.text") == ""], "pool checks"


def _check_log_lines(stack: Stack, trace_id: str) -> None:
    """The server's and the processor's lines written in the trace carry its ids."""
    for process in (stack.server, stack.processor):
        lines = [line for line in process.log_lines() if line.get("trace_id") == trace_id]
        assert lines, f"no {process.name} line carries the trace id"
        assert all(len(line["span_id"]) == 16 for line in lines)
    access = [line for line in stack.server.log_lines() if line.get("method", "").endswith(
        "/CreateTask")]  # fmt: skip
    assert access[-1]["trace_id"] == trace_id
    assert access[-1]["request_id"]


async def _metrics(port: int, accept: str) -> tuple[str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept}) as response,
    ):
        return response.headers["Content-Type"], await response.text()


async def _check_exemplars(stack: Stack, trace_id: str) -> None:
    """OpenMetrics, when asked for, carries the trace id on the latency histograms."""
    openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    wanted = [
        (stack.gateway, "taskgate_gateway_http_request_duration_seconds_bucket{"),
        (stack.server, "grpc_server_handling_seconds_bucket{"),
        (stack.processor, "processing_time_seconds_bucket{"),
    ]
    for process, family in wanted:
        content_type, text = await _metrics(process.metrics_port, openmetrics)
        assert content_type.startswith("application/openmetrics-text")
        assert text.rstrip().endswith("# EOF")
        marked = [line for line in text.splitlines()
                  if line.startswith(family) and f'trace_id="{trace_id}"' in line]  # fmt: skip
        assert marked, f"no exemplar of the trace on {process.name}'s {family}"
        content_type, text = await _metrics(process.metrics_port, "text/plain")
        assert content_type.startswith("text/plain")
        assert "trace_id" not in text  # the classic format has no exemplars


async def test_a_task_whose_processor_was_killed_shows_both_attempts(
    database_url: str, redis_prefix: str, tmp_path: Path, receiver: Collector
) -> None:
    async with running_stack(
        database_url=database_url,
        redis_url=TEST_REDIS_URL,
        redis_prefix=redis_prefix,
        log_dir=tmp_path,
        TASKGATE_TASK_LEASE="1500ms",
        TASKGATE_PROCESSOR_POLL_INTERVAL="300ms",
        TASKGATE_TASK_RETRY_BACKOFF="50ms",
        **_tracing(receiver),
    ) as stack:
        trace_id, _, traceparent = _traceparent()
        async with aiohttp.ClientSession(base_url=stack.http) as http:
            auth = await _login(http)
            body = {  # a few seconds of work: the kill lands mid-pipeline
                "image": base64.b64encode(image_bytes(1200, 1200)).decode(),
                "filters": [{"blur": {"radius": 30}} for _ in range(8)],
            }
            created = await _json(
                http, "POST", "/v1/tasks", body, {**auth, "traceparent": traceparent}
            )
            task_id = created["task"]["taskId"]

            async def running() -> bool:
                return await _status(http, task_id, auth) == "TASK_STATUS_RUNNING"

            await eventually(running, within=30, interval=0.05)
            stack.processor.popen.send_signal(signal.SIGKILL)
            await asyncio.to_thread(stack.processor.popen.wait)
            respawn(stack, stack.processor)

            async def completed() -> bool:
                return await _status(http, task_id, auth) == "TASK_STATUS_COMPLETED"

            await eventually(completed, within=90, interval=0.2)

        async def both_exported() -> bool:
            attempts = [s for s in receiver.trace(trace_id) if s.name == "task.attempt"]
            return len(attempts) == 2

        await eventually(both_exported, within=20, interval=0.1)
        spans = receiver.trace(trace_id)
        rpc = _one(spans, service="taskgate-server", kind="server")
        attempts = sorted(
            (s for s in spans if s.name == "task.attempt"),
            key=lambda s: s.attributes["taskgate.task.attempt"],
        )
        lost, done = attempts
        assert [s.parent_id for s in attempts] == [rpc.span_id, rpc.span_id]
        assert lost.attributes["taskgate.task.attempt"] == 1
        assert lost.attributes["taskgate.task.outcome"] == "lost"
        assert lost.error
        assert done.attributes["taskgate.task.attempt"] == 2
        assert done.attributes["taskgate.task.outcome"] == "completed"
        assert lost.start < lost.end <= done.end
        assert lost.attributes["taskgate.processor.id"] != done.attributes["taskgate.processor.id"]
        filters = [s for s in spans if s.parent_id == done.span_id and s.name == "filter blur"]
        assert len(filters) == 8
    await _no_running_attempt_left(database_url, task_id)


async def _no_running_attempt_left(database_url: str, task_id: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        cursor = await db.execute(
            "SELECT attempt, outcome FROM task_attempts WHERE task_id = %s ORDER BY attempt",
            (task_id,),
        )
        assert await cursor.fetchall() == [(1, "lost"), (2, "completed")]


async def test_a_client_that_hangs_up_ends_its_span_without_an_error(
    database_url: str, redis_prefix: str, tmp_path: Path, receiver: Collector
) -> None:
    """A live stream the client walks away from: the gateway's span ends, cancelled,
    and neither it nor the server's call counts as a fault of ours."""
    async with running_stack(
        database_url=database_url,
        redis_url=TEST_REDIS_URL,
        redis_prefix=redis_prefix,
        log_dir=tmp_path,
        **_tracing(receiver),
    ) as stack:
        trace_id, client_span, traceparent = _traceparent()
        async with aiohttp.ClientSession(base_url=stack.http) as http:
            auth = await _login(http)
            body = {"image": base64.b64encode(image_bytes(8, 8)).decode(),
                    "filters": [{"grayscale": {}}]}  # fmt: skip
            await _json(http, "POST", "/v1/tasks", body, auth)  # an event to begin with
            headers = {**auth, "traceparent": traceparent}
            watch = await http.get("/v1/taskEvents:watch", headers=headers)
            assert watch.status == 200
            async with asyncio.timeout(10):
                assert b"TASK_EVENT_TYPE_CREATED" in await watch.content.readline()
            watch.close()  # and so the connection: the stream was following live

        async def both_ended() -> bool:
            kinds = {(s.service, s.kind) for s in receiver.trace(trace_id)}
            return {("taskgate-gateway", "server"), ("taskgate-server", "server")} <= kinds

        await eventually(both_ended, within=20, interval=0.1)
        spans = receiver.trace(trace_id)
        http_span = _one(spans, service="taskgate-gateway", kind="server")
        assert http_span.parent_id == client_span
        assert http_span.name == "GET /v1/taskEvents:watch"
        assert http_span.attributes["error.type"] == "cancelled"
        assert "http.response.status_code" not in http_span.attributes
        rpc = _one(spans, service="taskgate-server", kind="server")
        assert rpc.attributes["rpc.grpc.status_code"] == 1  # CANCELLED: the caller's doing
        assert not http_span.error
        assert not rpc.error
