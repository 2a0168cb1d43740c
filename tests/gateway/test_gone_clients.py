"""Clients that go away: the gateway cancels the upstream call at once, for
NDJSON and for Server-Sent Events (not at its next keep-alive write); and a
user's streams past their limit are a 429 with the QuotaFailure.

A real server (no processor: the watched task stays PENDING, its streams stay
open) behind a real gateway on a socket, run as ``python -m gateway`` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from aiohttp import web

from gateway.app import GATEWAY_KEY, Gateway, create_app
from gateway.config import Settings
from server.app import App
from server.config import Settings as ServerSettings
from tests.support.clients import Client, grayscale, task_user
from tests.support.images import image_bytes
from tests.support.polling import as_awaitable, eventually
from tests.support.raw_http import RawConnection, get_head
from tests.support.served_gateway import ServedGateway, served_gateway
from tests.support.servers import serving

STREAMS = 5
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"


@pytest.fixture
async def server(settings: ServerSettings) -> AsyncIterator[tuple[App, Client]]:
    async with serving(settings, embedded_processor=False, max_streams_per_user=STREAMS) as served:
        yield served


@pytest.fixture
async def served(
    server: tuple[App, Client], gateway_settings: Settings
) -> AsyncIterator[ServedGateway]:
    # Keep-alive comments far apart: they cannot be what notices a client is gone.
    settings = gateway_settings.model_copy(update={"sse_keepalive": 60.0})
    async with served_gateway(server[0], settings) as served:
        yield served


async def pending_task(client: Client) -> tuple[str, str]:
    tasks = await task_user(client)
    task = await tasks.create(image_bytes(), [grayscale()])
    token = tasks.metadata[0][1].removeprefix("Bearer ")
    return token, task.task_id


@pytest.mark.parametrize("accept", ["application/x-ndjson", "text/event-stream"])
async def test_upstream_streams_end_when_their_clients_go(
    server: tuple[App, Client], served: ServedGateway, accept: str
) -> None:
    app, client = server
    token, task_id = await pending_task(client)
    connections = [await RawConnection.open(served.port) for _ in range(STREAMS)]
    for connection in connections:
        await connection.send(get_head(f"/v1/tasks/{task_id}:watch", token=token, accept=accept))
        await connection.read_until(b"TASK_STATUS_PENDING")
    assert app.stream_limiter.open_streams == STREAMS
    started = time.monotonic()
    for connection in connections:
        await connection.close()
    await eventually(lambda: as_awaitable(app.stream_limiter.open_streams == 0), within=1.0)
    assert time.monotonic() - started < 1.0
    assert len(app.tasks._events) == 0  # no watcher left on the server
    registry = served.gateway.metrics.registry
    labels = {"method": "GET", "route": "/v1/tasks/{task_id}:watch", "status": "499"}
    answered = "taskgate_gateway_http_requests_total"
    await eventually(lambda: as_awaitable(registry.get_sample_value(answered, labels) == STREAMS))


async def test_streams_past_a_users_limit_are_429_with_the_quota(
    server: tuple[App, Client], served: ServedGateway
) -> None:
    app, client = server
    token, task_id = await pending_task(client)
    url = f"{served.base}/v1/tasks/{task_id}:watch"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        held = [await session.get(url, headers=headers) for _ in range(STREAMS)]
        try:
            for response in held:  # at the edge: all served
                assert response.status == 200
                assert b"TASK_STATUS_PENDING" in await response.content.readline()
            async with session.get(url, headers=headers) as refused:
                assert refused.status == 429
                error = await refused.json()
            assert error["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            quota = [d for d in error["details"] if d["@type"] == QUOTA_FAILURE]
            assert quota[0]["violations"][0]["description"] == (
                f"at most {STREAMS} concurrent streams per user"
            )
        finally:
            for response in held:
                response.close()
    await eventually(lambda: as_awaitable(app.stream_limiter.open_streams == 0), within=1.0)


async def test_a_client_gone_when_its_next_message_is_written_is_a_hang_up(
    server: tuple[App, Client], gateway_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The other way a gone client shows: not the handler's cancellation (aiohttp's
    handler_cancellation, which usually comes first), but the stream's next message
    meeting the closed connection. Here the handler is never cancelled, so the write
    comes first every time: a 499, not a 500 with "Error handling request"."""
    app, client = server
    tasks = await task_user(client)
    task = await tasks.create(image_bytes(), [grayscale()])
    token = tasks.metadata[0][1].removeprefix("Bearer ")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        web_app = create_app(gateway_settings, channel)
        runner = web.AppRunner(web_app, handler_cancellation=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = int(runner.addresses[0][1])
            connection = await RawConnection.open(port)
            path = f"/v1/tasks/{task.task_id}:watch"
            await connection.send(get_head(path, token=token, accept="application/x-ndjson"))
            await connection.read_until(b"TASK_STATUS_PENDING")
            await connection.close()
            await asyncio.sleep(0.05)  # the gateway has seen the connection close
            await tasks.cancel(task.task_id)  # the stream's next message

            gateway = web_app[GATEWAY_KEY]
            assert isinstance(gateway, Gateway)
            registry = gateway.metrics.registry
            labels = {"method": "GET", "route": "/v1/tasks/{task_id}:watch"}
            answered = "taskgate_gateway_http_requests_total"
            await eventually(
                lambda: as_awaitable(
                    registry.get_sample_value(answered, {**labels, "status": "499"}) == 1
                )
            )
            assert registry.get_sample_value(answered, {**labels, "status": "500"}) is None
            await eventually(lambda: as_awaitable(app.stream_limiter.open_streams == 0))
        finally:
            await runner.cleanup()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
