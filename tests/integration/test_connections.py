"""Idle connections are closed by the server (1,000 idle TCP connections, 500
after the HTTP/2 preface, were once kept as long as the client liked)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from server.config import Settings
from tests.support.rawh2 import RawH2
from tests.support.servers import serving

IDLE = 0.5


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while await reader.read(65536):
            pass
    return time.monotonic() - started


async def test_an_idle_connection_after_the_preface_is_closed(settings: Settings) -> None:
    async with serving(settings, grpc_max_connection_idle=IDLE) as (app, _):
        client = await RawH2.connect(app.port)
        started = time.monotonic()
        try:
            async with asyncio.timeout(IDLE + 3):
                assert await client.closed_by_peer()
        finally:
            await client.close()
        assert time.monotonic() - started >= IDLE * 0.8  # not before the limit


async def test_a_silent_tcp_connection_is_closed(settings: Settings) -> None:
    async with serving(settings, grpc_max_connection_idle=IDLE) as (app, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        try:
            await closed_within(reader, IDLE + 3)
        finally:
            writer.close()
            await writer.wait_closed()


async def test_a_busy_connection_outlives_the_idle_limit(settings: Settings) -> None:
    async with serving(settings, grpc_max_connection_idle=IDLE) as (app, _):
        client = await RawH2.connect(app.port)
        try:
            ends = time.monotonic() + IDLE * 4
            while time.monotonic() < ends:
                answer = await client.unary("/grpc.health.v1.Health/Check", b"", [])
                assert answer[b"grpc-status"] == b"0"
                await asyncio.sleep(IDLE / 5)
        finally:
            await client.close()


@pytest.mark.parametrize("age", [1.0])
async def test_a_connection_is_recycled_at_its_maximum_age(settings: Settings, age: float) -> None:
    changes: dict[str, Any] = {"grpc_max_connection_age": age, "grpc_max_connection_age_grace": 0.2}
    async with serving(settings, **changes) as (app, _):
        client = await RawH2.connect(app.port)
        started = time.monotonic()
        try:
            ends = started + age + 3
            closed = False
            while time.monotonic() < ends and not closed:
                answer = await client.unary("/grpc.health.v1.Health/Check", b"", [])
                closed = b"grpc-status" not in answer
                await asyncio.sleep(0.1)
            assert closed, "the connection outlived its maximum age"
        finally:
            await client.close()
        assert time.monotonic() - started >= age * 0.7  # grpc jitters the age by ±10 %
