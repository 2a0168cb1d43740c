"""Fixtures: a real gateway (aiohttp on 127.0.0.1, a free port) in front of a real
server: the product's App (tests/conftest.py), or the test-only ShapesService."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import Settings
from gateway.openapi import load_descriptor_set
from server.app import App
from tests.gateway.shapes import compiled, service_descriptor, shapes_server

Client = TestClient[web.Request, web.Application]
ORIGIN = "https://app.example.com"


@pytest.fixture
def gateway_settings() -> Settings:
    return Settings(
        addr="127.0.0.1:0",
        metrics_addr="127.0.0.1:0",
        cors_origins=(ORIGIN,),
        max_body_bytes=64 * 1024,
        default_timeout=7.0,
        sse_keepalive=0.05,
        log_level="warning",
    )


async def _ready(client: Client) -> None:
    for _ in range(100):
        response = await client.get("/ready")
        if response.status == 200:
            return
        await response.release()
        await asyncio.sleep(0.02)
    raise AssertionError("the gateway never became ready")


@pytest.fixture
async def http(
    app: App, channel: grpc.aio.Channel, gateway_settings: Settings
) -> AsyncIterator[Client]:
    """A client of the gateway in front of the product's server."""
    async with TestClient(
        TestServer(create_app(gateway_settings, channel), host="127.0.0.1")
    ) as client:
        await _ready(client)
        yield client


@pytest.fixture
async def shapes(gateway_settings: Settings) -> AsyncIterator[Client]:
    """A client of the gateway in front of the test-only ShapesService."""
    async with (
        shapes_server() as (port, _health),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        gateway = create_app(
            gateway_settings,
            channel,
            services=[service_descriptor()],
            comments=load_descriptor_set(compiled()),
        )
        async with TestClient(TestServer(gateway, host="127.0.0.1")) as client:
            await _ready(client)
            yield client
