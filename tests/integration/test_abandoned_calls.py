"""A caller's own short deadline is the caller's: no store error, and a log line each.

Hundreds of ListTasks calls with deadlines of a fraction of a millisecond to a
few milliseconds (some pass before the call begins, some during the session
lookup in Redis, some during the statement) end DEADLINE_EXCEEDED or
CANCELLED. Neither ``db_query_errors_total`` nor ``redis_command_errors_total``
counts them (a store slower than its own timeout still counts: see
test_dependency_metrics's stalled-store test), and every call
``grpc_server_handled_total`` counts has its access-log line.
"""

from __future__ import annotations

import asyncio
import logging
import random

import grpc
import pytest

from server.config import Settings
from taskgate.v1 import task_service_pb2 as pb
from tests.support.clients import task_user
from tests.support.metrics import value
from tests.support.servers import serving

CALLS = 400


async def test_short_client_deadlines_are_no_store_errors_and_each_is_logged(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(17)
    async with serving(settings, embedded_processor=False) as (app, client):
        tasks = await task_user(client)
        codes: list[grpc.StatusCode] = []

        async def one() -> None:
            try:
                await tasks.stub.ListTasks(
                    pb.ListTasksRequest(page_size=10),
                    metadata=tasks.metadata,
                    timeout=rng.uniform(0.0005, 0.03),
                )
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())

        with caplog.at_level(logging.INFO, logger="taskgate.access"):
            for _ in range(CALLS // 100):
                await asyncio.gather(*(one() for _ in range(100)))
            await asyncio.sleep(1.0)  # the server ends the calls the clients gave up on
        registry = app.registry
        handled = {
            code: value(registry, "grpc_server_handled_total", grpc_type="UNARY",
                        grpc_service="taskgate.v1.TaskService", grpc_method="ListTasks",
                        grpc_code=code)
            for code in ("OK", "DEADLINE_EXCEEDED", "CANCELLED", "UNAVAILABLE", "UNKNOWN")
        }  # fmt: skip
        assert (
            value(registry, "db_query_errors_total", operation="list_tasks", category="select") == 0
        )
        assert value(registry, "redis_command_errors_total", command="session_owner") == 0
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes
    assert handled["UNAVAILABLE"] == handled["UNKNOWN"] == 0
    assert handled["DEADLINE_EXCEEDED"] > 0
    logged = [
        r for r in caplog.records
        if r.name == "taskgate.access" and getattr(r, "fields", {}).get("method", "").endswith(
            "/ListTasks")
    ]  # fmt: skip
    assert len(logged) == sum(handled.values())
    by_code = {code: 0 for code in handled}
    for record in logged:
        by_code[record.fields["code"]] += 1  # type: ignore[attr-defined]
    assert by_code == handled
