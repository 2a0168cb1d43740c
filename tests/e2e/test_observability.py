"""Metrics and logs of the real processes after real traffic.

``python -m server`` (no embedded processor), ``python -m server.processor`` and
``python -m gateway`` run as an operator runs them. Traffic through the gateway
includes errors (no session, a wrong password, a lockout, an unknown task, a
malformed id) and an image task that completes. Then:

- each process's ``/metrics`` has exactly the families and labels below (what
  the dashboards and alerts are written against), with values;
- one ``X-Request-Id`` finds the gateway's, the server's and the processor's
  lines for that task, processing included.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import TEST_REDIS_URL
from tests.support.images import image_bytes
from tests.support.metric_families import GATEWAY_FAMILIES, PROCESSOR_FAMILIES, SERVER_FAMILIES
from tests.support.metrics import find, samples, scrape
from tests.support.polling import eventually
from tests.support.stack import Process, Stack, running_stack

pytestmark = pytest.mark.timeout(120)

PASSWORD = "correct horse battery"


@dataclass
class Traffic:
    request_id: str
    task_id: str
    user_id: str


@pytest.fixture
async def stack(
    database_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[Stack, Traffic]]:
    async with running_stack(
        database_url=database_url,
        redis_url=TEST_REDIS_URL,
        redis_prefix=redis_prefix,
        log_dir=tmp_path,
        TASKGATE_LOGIN_RATE_LIMIT="2",
    ) as running:
        yield running, await drive(running)


async def drive(stack: Stack) -> Traffic:
    """Errors, a lockout and a completed image task, through the gateway."""
    request_id = f"obs-{secrets.token_hex(8)}"
    async with aiohttp.ClientSession(base_url=stack.http) as http:
        assert (await http.get("/v1/users/me")).status == 401
        user = await _json(http, "POST", "/v1/users", {"username": _name(), "password": PASSWORD})
        login = {"username": user["user"]["username"], "password": PASSWORD}
        wrong = {**login, "password": "not the password, no"}
        assert (await http.post("/v1/sessions", json=wrong)).status == 401
        session = await _json(http, "POST", "/v1/sessions", login)
        auth = {"Authorization": f"Bearer {session['session']['sessionId']}"}
        await _locked_out(http)
        body = {
            "image": base64.b64encode(image_bytes(64, 48)).decode(),
            "filters": [{"grayscale": {}}, {"blur": {"radius": 1}}],
        }
        created = await _json(http, "POST", "/v1/tasks", body, {**auth, "X-Request-Id": request_id})
        task_id = created["task"]["taskId"]
        watch = await http.get(f"/v1/tasks/{task_id}:watch", headers=auth)
        assert b"TASK_STATUS_COMPLETED" in await watch.read()
        assert (await http.get(f"/v1/tasks/{task_id}/result", headers=auth)).status == 200
        unknown = "/v1/tasks/00000000-0000-4000-8000-000000000000"
        assert (await http.get(unknown, headers=auth)).status == 404
        assert (await http.get("/v1/tasks/not-an-id", headers=auth)).status == 400
    await _reflect(stack.grpc_port)  # a request stream: its messages counted too
    return Traffic(request_id, task_id, user["user"]["userId"])


async def _locked_out(http: aiohttp.ClientSession) -> None:
    """Another user's wrong passwords, past TASKGATE_LOGIN_RATE_LIMIT: a lockout."""
    user = await _json(http, "POST", "/v1/users", {"username": _name(), "password": PASSWORD})
    wrong = {"username": user["user"]["username"], "password": "not the password, no"}
    statuses = [(await http.post("/v1/sessions", json=wrong)).status for _ in range(3)]
    assert statuses == [401, 401, 429]


async def _reflect(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        asked = iter([reflection_pb2.ServerReflectionRequest(list_services="*")])
        assert len([answer async for answer in stub.ServerReflectionInfo(asked)]) == 1


def _name() -> str:
    return f"user{secrets.token_hex(6)}"


async def _json(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    async with http.request(method, path, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        payload: dict[str, Any] = await response.json()
        return payload


# --- metrics ---------------------------------------------------------------------------


async def _exposition(process: Process) -> str:
    status, content_type, text = await scrape(process.metrics_port)
    assert status == 200
    assert content_type.startswith("text/plain; version=")  # Prometheus' text format
    return text


def assert_families(text: str, expected: Mapping[str, set[str]]) -> None:
    """Every family is there, with exactly these label names on every sample."""
    seen: dict[str, list[set[str]]] = {}
    for sample in samples(text):
        seen.setdefault(sample.name, []).append(set(sample.labels))
    missing = sorted(set(expected) - set(seen))
    assert not missing, f"missing families: {missing}"
    for name, labels in expected.items():
        assert all(found == labels for found in seen[name]), (name, seen[name][:3])


def one(text: str, name: str, **labels: str) -> float:
    found = find(text, name, labels)
    assert len(found) == 1, (name, labels, found)
    return float(found[0].value)


async def test_each_process_exports_its_families_after_real_traffic(
    stack: tuple[Stack, Traffic],
) -> None:
    running, _ = stack
    server = await _exposition(running.server)
    assert_families(server, SERVER_FAMILIES)
    unary = {"grpc_service": "taskgate.v1.TaskService", "grpc_type": "UNARY"}
    assert one(server, "grpc_server_handled_total", **unary, grpc_method="CreateTask",
               grpc_code="OK") == 1  # fmt: skip
    assert one(server, "grpc_server_handled_total", **unary, grpc_method="GetTask",
               grpc_code="NOT_FOUND") == 1  # fmt: skip
    assert one(server, "grpc_server_handled_total", **unary, grpc_method="GetTask",
               grpc_code="INVALID_ARGUMENT") == 1  # fmt: skip
    assert one(server, "grpc_server_handled_total", grpc_method="GetUser",
               grpc_code="UNAUTHENTICATED") == 1  # fmt: skip
    watch = {"grpc_method": "WatchTask", "grpc_type": "SERVER_STREAMING"}
    assert one(server, "grpc_server_handled_total", **watch, grpc_code="OK") == 1
    assert one(server, "grpc_server_msg_sent_total", **watch) >= 2  # pending .. completed
    assert one(server, "grpc_server_msg_received_total", grpc_type="BIDI_STREAMING") == 1
    assert one(server, "tasks_created_total") == 1
    assert one(server, "sessions_created_total") == 1
    assert one(server, "login_failures_total", reason="wrong_password") == 3
    assert one(server, "rate_limit_refusals_total", limit="login_lockout") == 1
    assert one(server, "db_pool_connections_max", pool="api") == 4
    assert (
        one(server, "db_query_duration_seconds_count", operation="insert_task", category="insert")
        == 1
    )
    assert one(server, "db_query_errors_total", operation="insert_task") == 0
    assert one(server, "redis_command_duration_seconds_count", command="session_owner") >= 5
    assert one(server, "redis_command_errors_total", command="session_owner") == 0
    assert one(server, "process_cpu_seconds_total") > 0

    processor = await _exposition(running.processor)
    assert_families(processor, PROCESSOR_FAMILIES)
    assert one(processor, "tasks_finished_total", status="completed") == 1
    assert one(processor, "processing_time_seconds_count") == 1
    assert one(processor, "filters_used_total", filter="grayscale") == 1
    assert one(processor, "filters_used_total", filter="blur") == 1
    assert one(processor, "task_queue_wait_seconds_count") == 1
    assert one(processor, "db_pool_connections_max", pool="processor") == 3  # concurrency + 2
    claim = "claim_tasks_fair+claimed_inputs"  # one round trip: the claim, then the inputs
    assert one(processor, "db_query_duration_seconds_count", operation=claim) >= 1
    assert one(processor, "process_resident_memory_bytes") > 0

    gateway = await _exposition(running.gateway)
    assert_families(gateway, GATEWAY_FAMILIES)
    assert one(gateway, "taskgate_gateway_http_requests_total", method="POST",
               route="/v1/tasks", status="200") == 1  # fmt: skip
    assert one(gateway, "taskgate_gateway_http_requests_total", method="POST",
               route="/v1/sessions", status="429") == 1  # fmt: skip
    assert one(gateway, "process_cpu_seconds_total") > 0


async def test_metrics_ports_serve_only_metrics(stack: tuple[Stack, Traffic]) -> None:
    running, _ = stack
    for process in running.processes:
        status, content_type, body = await scrape(process.metrics_port, "/")
        assert (status, content_type.split(";")[0]) == (404, "text/plain"), process.name
        assert "404" in body


# --- logs ------------------------------------------------------------------------------


async def test_one_request_id_finds_every_line_of_a_task(stack: tuple[Stack, Traffic]) -> None:
    running, traffic = stack

    async def processor_done() -> bool:
        return any(
            line.get("request_id") == traffic.request_id and "completed" in line["message"]
            for line in running.processor.log_lines()
        )

    await eventually(processor_done)
    found = {
        process.name: [
            line for line in process.log_lines() if line.get("request_id") == traffic.request_id
        ]
        for process in running.processes
    }
    for name, lines in found.items():
        assert lines, f"no {name} line has the request id"
        for line in lines:
            assert {"time", "level", "service", "message"} <= set(line), line
            assert line["service"] == f"taskgate-{name}"
    assert any(line.get("route") == "/v1/tasks" for line in found["gateway"])
    (access,) = [line for line in found["server"] if line.get("method", "").endswith("CreateTask")]
    assert access["user_id"] == traffic.user_id
    assert access["task_id"] == traffic.task_id
    processing = found["processor"]
    assert all(line["task_id"] == traffic.task_id for line in processing)
    assert all(line["user_id"] == traffic.user_id for line in processing)
    messages = " | ".join(line["message"] for line in processing)
    assert "started" in messages
    assert "completed" in messages
