"""The product's users and sessions over HTTP only, through a real gateway in front
of the real server, and the gateway's own pages."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import grpc
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import Settings
from gateway.metrics import HttpMetrics, metrics_app
from server.app import App
from tests.conftest import ROOT
from tests.gateway.conftest import Client
from tests.support.clients import PASSWORD, new_username
from tests.support.net import free_port
from tests.support.raw_http import RawConnection


async def register(http: Client, username: str | None = None) -> dict[str, Any]:
    response = await http.post(
        "/v1/users", json={"username": username or new_username(), "password": PASSWORD}
    )
    assert response.status == 200, await response.text()
    user: dict[str, Any] = (await response.json())["user"]
    return user


async def login(http: Client, username: str) -> str:
    response = await http.post("/v1/sessions", json={"username": username, "password": PASSWORD})
    assert response.status == 200, await response.text()
    token: str = (await response.json())["session"]["sessionId"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_register_login_use_logout(http: Client) -> None:
    user = await register(http)
    assert set(user) == {"userId", "username", "createTime"}
    token = await login(http, user["username"])
    me = await http.get("/v1/users/me", headers=bearer(token))
    assert (await me.json())["user"] == user
    session = await (await http.get(f"/v1/sessions/{token}", headers=bearer(token))).json()
    assert session["session"]["userId"] == user["userId"]
    assert session["session"]["expireTime"] > session["session"]["createTime"]
    logout = await http.delete(f"/v1/sessions/{token}", headers=bearer(token))
    assert (logout.status, await logout.json()) == (200, {})
    after = await http.get("/v1/users/me", headers=bearer(token))
    assert after.status == 401
    assert after.headers["WWW-Authenticate"] == 'Bearer realm="taskgate"'


async def test_proto_field_names_are_accepted(http: Client) -> None:
    username = new_username()
    response = await http.post(
        "/v1/users", json={"username": username, "password": PASSWORD, "extra": [1]}
    )
    assert response.status == 200
    assert (await response.json())["user"]["username"] == username


async def test_error_paths(http: Client) -> None:
    alice = await register(http)
    bob = await register(http)
    token = await login(http, alice["username"])
    cases: list[tuple[str, str, dict[str, Any] | None, dict[str, str], int, int]] = [
        ("POST", "/v1/users", {"username": "A", "password": "x"}, {}, 400, 3),
        ("POST", "/v1/users", {"username": alice["username"], "password": PASSWORD}, {}, 409, 6),
        ("GET", "/v1/users/me", None, {}, 401, 16),
        ("GET", "/v1/users/me", None, {"Authorization": "Basic x"}, 401, 16),
        ("GET", f"/v1/users/{bob['userId']}", None, bearer(token), 404, 5),
        (
            "POST",
            "/v1/sessions",
            {"username": alice["username"], "password": "wrong pw!"},
            {},
            401,
            16,
        ),
        ("DELETE", "/v1/sessions/not-a-session", None, bearer(token), 400, 3),
        ("PATCH", "/v1/users/me", None, bearer(token), 501, 12),
        ("GET", "/v1/nothing", None, {}, 404, 5),
    ]
    for method, path, body, headers, status, code in cases:
        response = await http.request(method, path, json=body, headers=headers)
        payload = await response.json()
        assert (response.status, payload["code"]) == (status, code), (method, path, payload)
        assert set(payload) == {"code", "message", "details"}
        assert response.headers["Content-Type"] == "application/json"
    invalid = await http.post("/v1/users", json={"username": "A", "password": "x"})
    details = (await invalid.json())["details"]
    assert details[0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert {v["field"] for v in details[0]["fieldViolations"]} == {"username", "password"}


async def test_login_rate_limit_is_429_with_retry_info(http: Client) -> None:
    user = await register(http)
    for _ in range(10):
        response = await http.post(
            "/v1/sessions", json={"username": user["username"], "password": "wrong password"}
        )
        assert response.status == 401
    limited = await http.post(
        "/v1/sessions", json={"username": user["username"], "password": PASSWORD}
    )
    assert limited.status == 429
    detail = (await limited.json())["details"][0]
    assert detail["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    assert detail["retryDelay"].endswith("s")


async def test_upstream_down_is_503_and_not_ready(gateway_settings: Settings) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        app = create_app(gateway_settings.model_copy(update={"default_timeout": 1.0}), channel)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            response = await client.post("/v1/users", json={"username": "x"})
            assert response.status == 503
            assert (await response.json())["code"] == 14
            ready = await client.get("/ready")
            assert (ready.status, await ready.json()) == (503, {"status": "NOT_SERVING"})
            assert (await client.get("/live")).status == 200


async def test_ready_follows_server_health(http: Client, app: App) -> None:
    assert (await http.get("/ready")).status == 200
    await app.health.enter_graceful_shutdown()
    for _ in range(100):
        if (await http.get("/ready")).status == 503:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("/ready stayed 200 while the server was NOT_SERVING")


async def test_openapi_document(http: Client) -> None:
    response = await http.get("/openapi.json")
    document = await response.json()
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    assert set(paths) >= {
        "/v1/users",
        "/v1/users/{user_id}",
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/tasks",
        "/v1/tasks/{task_id}",
        "/v1/tasks/{task_id}:cancel",
        "/v1/tasks/{task_id}:watch",
        "/v1/tasks/{task_id}/result",
        "/v1/filters",
    }
    get_user = paths["/v1/users/{user_id}"]["get"]
    assert get_user["operationId"] == "UserService_GetUser"
    assert get_user["summary"] == "Returns the calling user"
    assert get_user["parameters"][0]["in"] == "path"
    assert "`me`" in get_user["parameters"][0]["description"]
    list_tasks = paths["/v1/tasks"]["get"]
    assert [p["name"] for p in list_tasks["parameters"]] == ["pageSize", "pageToken", "status"]
    assert paths["/v1/tasks/{task_id}"]["delete"]["operationId"] == "TaskService_CancelTask2"
    result = paths["/v1/tasks/{task_id}/result"]["get"]["responses"]["200"]
    assert "*/*" in result["content"]
    schemas = document["components"]["schemas"]
    assert schemas["taskgate.v1.User"]["properties"]["createTime"]["description"]
    assert schemas["google.rpc.Status"]["required"] == ["code", "message", "details"]
    create = paths["/v1/users"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"] == {"$ref": "#/components/schemas/taskgate.v1.CreateUserRequest"}


async def test_docs_pages(http: Client) -> None:
    page = await http.get("/docs")
    assert page.headers["Content-Type"].startswith("text/html")
    assert "/openapi.json" in await page.text()
    bundle = await http.get("/docs/swagger-ui-bundle.js")
    assert bundle.status == 200
    assert len(await bundle.read()) > 100_000
    assert (await http.get("/docs/index.html")).status == 404


async def test_metrics(app: App, channel: grpc.aio.Channel, gateway_settings: Settings) -> None:
    metrics = HttpMetrics()
    gateway = create_app(gateway_settings, channel, metrics=metrics)
    async with (
        TestClient(TestServer(gateway, host="127.0.0.1")) as client,
        TestClient(TestServer(metrics_app(metrics), host="127.0.0.1")) as scraper,
    ):
        await client.get("/v1/users/me")
        await client.get("/v1/users/me")
        await client.get("/not/a/route")
        await client.request("PROPFIND", "/v1/users")
        text = await (await scraper.get("/metrics")).text()
    assert (
        'taskgate_gateway_http_requests_total{method="GET",route="/v1/users/{user_id}",'
        'status="401"} 2.0' in text
    )
    assert 'route="unmatched",status="404"' in text
    assert 'method="other",route="unmatched",status="501"' in text
    assert "taskgate_gateway_http_request_duration_seconds_bucket" in text
    assert "taskgate_gateway_http_requests_in_flight 0.0" in text


async def test_python_m_gateway(app: App) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "TASKGATE_GATEWAY_ADDR": f"127.0.0.1:{port}",
        "TASKGATE_GATEWAY_UPSTREAM": f"127.0.0.1:{app.port}",
        "TASKGATE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        "TASKGATE_LOG_LEVEL": "warning",
        "TASKGATE_GATEWAY_HEADER_TIMEOUT": "500ms",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", cwd=ROOT, env=env
    )
    try:
        async with ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/ready") as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("python -m gateway did not become ready")
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                assert "taskgate_gateway_http_requests_total" in await response.text()
        # Its server runs with the header timeout: a head that never ends is cut off.
        silent = await RawConnection.open(port)
        try:
            await silent.send(b"GET /live HTTP/1.1\r\n")
            assert await asyncio.wait_for(silent.closed_by_peer(), 5)
        finally:
            await silent.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


@pytest.mark.parametrize(
    ("env", "status"),
    [({"TASKGATE_GATEWAY_ADDR": "nowhere"}, 2), ({"TASKGATE_GATEWAY_ADDR": "192.0.2.1:1"}, 1)],
)
async def test_python_m_gateway_fails_fast(env: dict[str, str], status: int) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        cwd=ROOT,
        env={**os.environ, "TASKGATE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{free_port()}", **env},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == status, err


async def test_openapi_states_the_declared_rules(http: Client) -> None:
    document = await (await http.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    create_user = schemas["taskgate.v1.CreateUserRequest"]
    assert create_user["required"] == ["username", "password"]
    username = create_user["properties"]["username"]
    assert (username["minLength"], username["maxLength"]) == (3, 32)
    assert username["pattern"] == "^[a-z][a-z0-9_.-]*$"
    create_task = schemas["taskgate.v1.CreateTaskRequest"]
    assert create_task["required"] == ["image", "filters"]
    filters = create_task["properties"]["filters"]
    assert (filters["minItems"], filters["maxItems"]) == (1, 20)
    assert create_task["properties"]["idempotencyKey"]["maxLength"] == 128
    assert schemas["taskgate.v1.Filter"]["maxProperties"] == 1
    radius = schemas["taskgate.v1.Filter.Blur"]["properties"]["radius"]
    assert (radius["exclusiveMinimum"], radius["maximum"]) == (0, 100)
    width = schemas["taskgate.v1.Filter.Resize"]["properties"]["width"]
    assert (width["minimum"], width["maximum"]) == (1, 10_000)
    direction = schemas["taskgate.v1.Filter.Flip"]["properties"]["direction"]
    assert direction["enum"] == ["DIRECTION_HORIZONTAL", "DIRECTION_VERTICAL"]
    paths = document["paths"]
    task_id = paths["/v1/tasks/{task_id}"]["get"]["parameters"][0]["schema"]
    assert task_id["format"] == "uuid"
    user_id = paths["/v1/users/{user_id}"]["get"]["parameters"][0]["schema"]
    assert {"type": "string", "enum": ["me"]} in user_id["anyOf"]
    page_size = paths["/v1/tasks"]["get"]["parameters"][0]["schema"]
    assert page_size["minimum"] == 0
    assert paths["/v1/users"]["post"]["requestBody"]["required"] is True
    assert paths["/v1/tasks/{task_id}:cancel"]["post"]["requestBody"]["required"] is False


async def test_openapi_security_and_errors_per_operation(http: Client) -> None:
    document = await (await http.get("/openapi.json")).json()
    operations = {
        operation["operationId"]: operation
        for item in document["paths"].values()
        for operation in item.values()
    }
    public = {name for name, operation in operations.items() if operation["security"] == []}
    assert public == {
        "UserService_CreateUser",
        "SessionService_CreateSession",
        "TaskService_ListFilters",
    }
    for name, operation in operations.items():
        responses = operation["responses"]
        assert "default" not in responses
        for status, response in responses.items():
            if status != "200":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/google.rpc.Status"}, name
        assert ("401" in responses) == (name not in public or name.endswith("CreateSession"))
        assert {"400", "429", "431", "500", "503", "504"} <= set(responses), name
    assert "409" in operations["UserService_CreateUser"]["responses"]
    assert "413" in operations["TaskService_CreateTask"]["responses"]
    assert "413" not in operations["TaskService_GetTask"]["responses"]
    result = operations["TaskService_GetTaskResult"]["responses"]
    assert result["400"]["description"] == "INVALID_ARGUMENT or FAILED_PRECONDITION."
    assert "404" in result
