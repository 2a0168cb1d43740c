"""Tasks end to end over HTTP only: gateway → server (with its processor) → Postgres.

register → login → create a task with a base64 image → watch it over SSE and
over NDJSON → download the raw result and decode it; cancel (both bindings),
list with pagination and a status filter; every error path's JSON and status.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import Settings
from server.config import Settings as ServerSettings
from tests.gateway.conftest import Client
from tests.gateway.test_product import bearer, login, register
from tests.support.images import decode, image_bytes
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(60)
PIPELINE = [{"grayscale": {}}, {"resize": {"width": 24, "height": 12}}, {"blur": {"radius": 1}}]


async def session_headers(http: Client) -> dict[str, str]:
    user = await register(http)
    return bearer(await login(http, user["username"]))


async def create_task(http: Client, auth: dict[str, str], **extra: Any) -> dict[str, Any]:
    body = {
        "image": base64.b64encode(image_bytes(48, 32)).decode(),
        "filters": PIPELINE,
        "outputFormat": "IMAGE_FORMAT_PNG",
        **extra,
    }
    response = await http.post("/v1/tasks", json=body, headers=auth)
    assert response.status == 200, await response.text()
    task: dict[str, Any] = (await response.json())["task"]
    return task


@pytest.fixture
async def idle_http(settings: ServerSettings, gateway_settings: Settings) -> AsyncIterator[Client]:
    """A gateway in front of a server without a processor: tasks stay PENDING."""
    async with serving(settings, embedded_processor=False) as (_, client):
        app = create_app(gateway_settings, client.channel)
        async with TestClient(TestServer(app, host="127.0.0.1")) as http:
            yield http


async def test_a_task_from_submission_to_result(http: Client) -> None:
    auth = await session_headers(http)
    filters = await (await http.get("/v1/filters")).json()
    assert "blur" in [f["name"] for f in filters["filters"]]
    task = await create_task(http, auth)
    assert task["status"] == "TASK_STATUS_PENDING"
    assert task["input"] == {
        "contentType": "image/png",
        "width": 48,
        "height": 32,
        "sizeBytes": task["input"]["sizeBytes"],
    }
    assert isinstance(task["input"]["sizeBytes"], str)  # int64 as a string
    assert task["result"] is None

    sse = await http.get(
        f"/v1/tasks/{task['taskId']}:watch", headers={**auth, "Accept": "text/event-stream"}
    )
    assert sse.headers["Content-Type"] == "text/event-stream"
    events = [block for block in (await sse.text()).split("\n\n") if "data: " in block]
    assert events[-1] == "event: end\ndata: {}"
    statuses = [
        json.loads(block.split("data: ", 1)[1])["result"]["task"]["status"] for block in events[:-1]
    ]
    assert statuses[-1] == "TASK_STATUS_COMPLETED"

    ndjson = await http.get(f"/v1/tasks/{task['taskId']}:watch", headers=auth)
    lines = [json.loads(line) for line in (await ndjson.read()).splitlines()]
    assert lines[-1]["result"]["task"]["status"] == "TASK_STATUS_COMPLETED"
    assert lines[-1]["result"]["task"]["progress"] == 3

    result = await http.get(f"/v1/tasks/{task['taskId']}/result", headers=auth)
    assert result.status == 200
    assert result.headers["Content-Type"] == "image/png"
    image = decode(await result.read())
    assert (image.size, image.mode) == ((24, 12), "L")

    got = (await (await http.get(f"/v1/tasks/{task['taskId']}", headers=auth)).json())["task"]
    assert got["status"] == "TASK_STATUS_COMPLETED"
    assert got["duration"].endswith("s")
    assert got["result"]["width"] == 24
    assert got["filters"][1] == {"resize": {"width": 24, "height": 12}}


async def test_cancel_and_list_with_pagination(idle_http: Client) -> None:
    http = idle_http
    auth = await session_headers(http)
    ids = [(await create_task(http, auth, idempotencyKey=f"k{i}"))["taskId"] for i in range(5)]
    again = await create_task(http, auth, idempotencyKey="k0")
    assert again["taskId"] == ids[0]

    posted = await http.post(f"/v1/tasks/{ids[0]}:cancel", json={}, headers=auth)
    assert (await posted.json())["task"]["status"] == "TASK_STATUS_CANCELLED"
    deleted = await http.delete(f"/v1/tasks/{ids[1]}", headers=auth)
    assert (await deleted.json())["task"]["status"] == "TASK_STATUS_CANCELLED"
    twice = await http.delete(f"/v1/tasks/{ids[1]}", headers=auth)
    assert twice.status == 400
    assert (await twice.json())["code"] == 9  # FAILED_PRECONDITION

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        query = f"?pageSize=2&pageToken={token}" if token else "?page_size=2"
        page = await (await http.get(f"/v1/tasks{query}", headers=auth)).json()
        seen += [t["taskId"] for t in page["tasks"]]
        pages += 1
        token = page["nextPageToken"]
        if not token:
            break
    assert pages == 3
    assert seen == list(reversed(ids))  # newest first

    cancelled = await http.get("/v1/tasks?status=TASK_STATUS_CANCELLED", headers=auth)
    assert {t["taskId"] for t in (await cancelled.json())["tasks"]} == set(ids[:2])
    by_number = await http.get("/v1/tasks?status=5", headers=auth)
    assert len((await by_number.json())["tasks"]) == 2


async def test_task_error_paths(idle_http: Client) -> None:
    http = idle_http
    auth = await session_headers(http)
    other = await session_headers(http)
    task = await create_task(http, auth)
    tid = task["taskId"]
    image = base64.b64encode(image_bytes(8, 8)).decode()
    cases: list[tuple[str, str, Any, dict[str, str], int, int]] = [
        ("POST", "/v1/tasks", {"image": image, "filters": []}, auth, 400, 3),
        ("POST", "/v1/tasks", {"image": "not base64!", "filters": PIPELINE}, auth, 400, 3),
        ("POST", "/v1/tasks", {"image": image, "filters": [{"blur": {"radius": 0}}]}, auth, 400, 3),
        ("POST", "/v1/tasks", {"image": image, "filters": PIPELINE}, {}, 401, 16),
        ("GET", f"/v1/tasks/{tid}", None, other, 404, 5),
        ("GET", f"/v1/tasks/{tid}/result", None, auth, 400, 9),
        ("GET", f"/v1/tasks/{tid}:watch", None, other, 404, 5),
        ("POST", f"/v1/tasks/{tid}:cancel", {}, other, 404, 5),
        ("GET", "/v1/tasks?pageSize=2&pageSize=3", None, auth, 400, 3),
        ("GET", "/v1/tasks?status=TASK_STATUS_SLEEPING", None, auth, 400, 3),
        ("GET", "/v1/tasks?pageToken=forged", None, auth, 400, 3),
        ("PUT", f"/v1/tasks/{tid}", None, auth, 501, 12),
    ]
    for method, path, body, headers, status, code in cases:
        response = await http.request(method, path, json=body, headers=headers)
        payload = await response.json()
        assert (response.status, payload["code"]) == (status, code), (method, path, payload)
        assert set(payload) == {"code", "message", "details"}
    bad = await http.post(
        "/v1/tasks", json={"image": image, "filters": [{"blur": {"radius": 0}}]}, headers=auth
    )
    violation = (await bad.json())["details"][0]
    assert violation["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert violation["fieldViolations"][0]["field"].startswith("filters[0]")
