"""The event feed over HTTP, from the annotations: GET /v1/taskEvents pages in
order, GET /v1/taskEvents:watch streams as NDJSON and as SSE, and resumes
after an id."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.e2e.test_tasks_http import create_task, session_headers
from tests.gateway.conftest import Client

pytestmark = pytest.mark.timeout(60)


async def wait_ended(http: Client, auth: dict[str, str], task_id: str) -> None:
    watched = await http.get(f"/v1/tasks/{task_id}:watch", headers=auth)
    await watched.read()


async def test_events_listed_and_watched_over_http(http: Client) -> None:
    auth = await session_headers(http)
    task = await create_task(http, auth)
    await wait_ended(http, auth, task["taskId"])

    listed = await http.get("/v1/taskEvents", headers=auth)
    assert listed.status == 200
    events: list[dict[str, Any]] = (await listed.json())["events"]
    assert [e["type"] for e in events] == [
        "TASK_EVENT_TYPE_CREATED",
        "TASK_EVENT_TYPE_STARTED",
        "TASK_EVENT_TYPE_COMPLETED",
    ]
    assert events[-1]["task"]["status"] == "TASK_STATUS_COMPLETED"
    assert isinstance(events[0]["eventId"], str)  # int64 as a string
    after = events[0]["eventId"]
    page = await http.get(f"/v1/taskEvents?after={after}&pageSize=1", headers=auth)
    assert [e["eventId"] for e in (await page.json())["events"]] == [events[1]["eventId"]]

    ndjson = await http.get(f"/v1/taskEvents:watch?after={after}", headers=auth)
    assert ndjson.status == 200
    async with asyncio.timeout(10):
        lines = [json.loads(await ndjson.content.readline()) for _ in range(2)]
    assert [line["result"]["event"]["eventId"] for line in lines] == [
        e["eventId"] for e in events[1:]
    ]
    ndjson.close()

    sse = await http.get("/v1/taskEvents:watch", headers={**auth, "Accept": "text/event-stream"})
    assert sse.headers["Content-Type"] == "text/event-stream"
    live = await create_task(http, auth)
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(seen) < 4:
            line = (await sse.content.readline()).decode()
            if line.startswith("data: "):
                seen.append(json.loads(line[6:])["result"]["event"])
    assert [e["taskId"] for e in seen] == [task["taskId"]] * 3 + [live["taskId"]]
    sse.close()


async def test_a_bad_offset_is_a_400_with_the_field(http: Client) -> None:
    auth = await session_headers(http)
    response = await http.get("/v1/taskEvents?after=-5", headers=auth)
    assert response.status == 400
    body = await response.json()
    assert body["code"] == 3
    violations = body["details"][0]["fieldViolations"]
    assert violations[0]["field"] == "after"
