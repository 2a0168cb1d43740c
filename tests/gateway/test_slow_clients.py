"""Slow clients: the head of a request must arrive within the header timeout and
its body within the body timeout, at the edge and past it (a real gateway on a
socket, run as ``python -m gateway`` runs it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.config import Settings
from server.app import App
from tests.support.raw_http import RawConnection, post_head, registration
from tests.support.served_gateway import ServedGateway, served_gateway

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
LIVE = b"GET /live HTTP/1.1\r\nHost: gateway\r\nX-Padding: 0123456789\r\n\r\n"


@pytest.fixture
async def served(app: App, gateway_settings: Settings) -> AsyncIterator[ServedGateway]:
    settings = gateway_settings.model_copy(
        update={"header_timeout": HEADER_TIMEOUT, "body_timeout": BODY_TIMEOUT}
    )
    async with served_gateway(app, settings) as served:
        yield served


async def trickle(connection: RawConnection, data: bytes, *, every: float) -> None:
    for index in range(len(data)):
        await connection.send(data[index : index + 1])
        await asyncio.sleep(every)


async def test_a_head_that_arrives_in_time_is_answered(served: ServedGateway) -> None:
    connection = await RawConnection.open(served.port)
    try:
        # In pieces, the last at about half the timeout.
        await trickle(connection, LIVE, every=HEADER_TIMEOUT / 2 / len(LIVE))
        assert (await connection.answer()).status == 200
    finally:
        await connection.close()


async def test_a_head_that_trickles_in_too_slowly_is_cut_off(served: ServedGateway) -> None:
    connection = await RawConnection.open(served.port)
    started = time.monotonic()
    sender = asyncio.create_task(trickle(connection, LIVE, every=0.1))  # 6 s for the head
    try:
        assert await asyncio.wait_for(connection.closed_by_peer(), 5)
        elapsed = time.monotonic() - started
        assert HEADER_TIMEOUT <= elapsed < HEADER_TIMEOUT + 1.5  # bytes did not extend it
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await connection.close()


async def test_a_connection_that_sends_nothing_and_an_idle_one_are_closed(
    served: ServedGateway,
) -> None:
    silent = await RawConnection.open(served.port)
    idle = await RawConnection.open(served.port)
    try:
        await idle.send(LIVE)
        assert (await idle.answer()).status == 200  # then nothing more: idle keep-alive
        started = time.monotonic()
        closed = await asyncio.wait_for(
            asyncio.gather(silent.closed_by_peer(), idle.closed_by_peer()), 5
        )
        assert list(closed) == [True, True]
        assert time.monotonic() - started < HEADER_TIMEOUT + 1.5
    finally:
        await silent.close()
        await idle.close()


async def test_a_body_that_arrives_in_time_is_read(served: ServedGateway) -> None:
    body = registration(200)
    connection = await RawConnection.open(served.port)
    try:
        await connection.send(post_head("/v1/users", len(body)) + body[:100])
        await asyncio.sleep(BODY_TIMEOUT / 2)
        await connection.send(body[100:])
        assert (await connection.answer()).status == 200
    finally:
        await connection.close()
    assert served.gateway.bodies.held == 0


async def test_a_body_that_stalls_is_408_after_the_body_timeout(served: ServedGateway) -> None:
    body = registration(200)
    connection = await RawConnection.open(served.port)
    started = time.monotonic()
    try:
        await connection.send(post_head("/v1/users", len(body)) + body[:100])
        answer = await asyncio.wait_for(connection.answer(), 5)
        elapsed = time.monotonic() - started
        assert answer.status == 408
        assert answer.json() == {
            "code": 4,
            "message": f"the request body did not arrive within {BODY_TIMEOUT:g}s",
            "details": [],
        }
        assert BODY_TIMEOUT <= elapsed < BODY_TIMEOUT + 1.5
    finally:
        await connection.close()
    assert served.gateway.bodies.held == 0
