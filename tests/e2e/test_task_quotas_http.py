"""The per-user pending limit through the gateway: HTTP 429 with grpc-gateway's
error body and the QuotaFailure and RetryInfo details; priority and the queue
position in JSON."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import Settings
from server.config import Settings as ServerSettings
from tests.e2e.test_tasks_http import PIPELINE, create_task, session_headers
from tests.gateway.conftest import Client
from tests.support.images import image_bytes
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def limited_http(
    settings: ServerSettings, gateway_settings: Settings
) -> AsyncIterator[Client]:
    """A gateway in front of a server without a processor, one pending task per user."""
    async with serving(settings, embedded_processor=False, user_max_pending=1) as (_, client):
        app = create_app(gateway_settings, client.channel)
        async with TestClient(TestServer(app, host="127.0.0.1")) as http:
            yield http


async def test_past_the_pending_limit_is_429_with_the_quota_and_retry_details(
    limited_http: Client,
) -> None:
    auth = await session_headers(limited_http)
    task = await create_task(limited_http, auth, priority=4)
    assert task["priority"] == 4
    shown = await (await limited_http.get(f"/v1/tasks/{task['taskId']}", headers=auth)).json()
    assert shown["task"]["queuePosition"] == 0

    image = base64.b64encode(image_bytes(48, 32)).decode()
    refused = await limited_http.post(
        "/v1/tasks", json={"image": image, "filters": PIPELINE}, headers=auth
    )
    assert refused.status == 429, await refused.text()
    body = await refused.json()
    assert body["code"] == 8
    assert "the most allowed is 1" in body["message"]
    quota, retry = body["details"]
    assert quota["@type"] == "type.googleapis.com/google.rpc.QuotaFailure"
    assert "at most 1 pending tasks per user" in quota["violations"][0]["description"]
    assert retry["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    assert retry["retryDelay"] == "5s"
