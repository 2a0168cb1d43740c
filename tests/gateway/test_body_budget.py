"""Bodies held by the gateway: a budget for all requests and a smaller share for
requests without credentials, refused at once past them, at the edge and past it.

A real server behind a real gateway on a socket; the clients that hold a share
of the budget are raw connections that declare a body and send only its start.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.config import Settings
from server.app import App
from tests.support.polling import as_awaitable, eventually
from tests.support.raw_http import RawConnection, post_head, registration
from tests.support.served_gateway import ServedGateway, served_gateway

MAX_BODY = 4000
TOTAL = 8000
ANONYMOUS = 3000
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


@pytest.fixture
async def served(app: App, gateway_settings: Settings) -> AsyncIterator[ServedGateway]:
    settings = gateway_settings.model_copy(
        update={
            "max_body_bytes": MAX_BODY,
            "body_budget_bytes": TOTAL,
            "anonymous_body_budget_bytes": ANONYMOUS,
        }
    )
    async with served_gateway(app, settings) as served:
        yield served


async def post(
    served: ServedGateway, body: bytes, *, token: str | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{served.base}/v1/users", data=body, headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.json()


async def holding(served: ServedGateway, size: int, *, token: str | None = None) -> RawConnection:
    """A connection that declared a body of ``size`` bytes and sent one of them."""
    connection = await RawConnection.open(served.port)
    await connection.send(post_head("/v1/users", size, token=token) + b"{")
    return connection


async def test_requests_without_credentials_share_a_smaller_budget(
    served: ServedGateway,
) -> None:
    bodies = served.gateway.bodies
    slow = await holding(served, ANONYMOUS)
    try:
        # At the edge: a body of the whole share is admitted (and counted before it is read).
        await eventually(lambda: as_awaitable(bodies.held_anonymous == ANONYMOUS))
        text = served.gateway.metrics.exposition().decode()
        held = "taskgate_gateway_body_bytes_held"
        assert f'{held}{{share="without_credentials"}} {ANONYMOUS}.0' in text
        assert f'{held}{{share="all"}} {ANONYMOUS}.0' in text
        status, headers, error = await post(served, b"{}")  # past it by two bytes
        assert status == 503
        assert error["code"] == 14
        assert "requests without credentials" in str(error["message"])
        assert [d["@type"] for d in error["details"]] == [RETRY_INFO]
        assert headers["Retry-After"] == "1"
        # A request with credentials draws on the rest of the total budget.
        status, _, _ = await post(served, registration(MAX_BODY), token="any-token")
        assert status == 200
    finally:
        await slow.close()
    await eventually(lambda: as_awaitable(bodies.held_anonymous == 0))
    status, _, _ = await post(served, registration(ANONYMOUS))
    assert status == 200
    assert bodies.held == 0


async def test_a_body_larger_than_the_anonymous_share_needs_credentials(
    served: ServedGateway,
) -> None:
    status, _, error = await post(served, registration(ANONYMOUS + 1))
    assert status == 413
    assert error["code"] == 8
    assert error["message"] == (
        f"a request without credentials may carry a body of at most {ANONYMOUS} bytes"
    )
    status, _, _ = await post(served, registration(ANONYMOUS + 1), token="any-token")
    assert status == 200
    status, _, error = await post(served, registration(MAX_BODY + 1), token="any-token")
    assert status == 413
    assert error["message"] == f"the request body is larger than {MAX_BODY} bytes"


async def test_the_total_budget_bounds_requests_with_credentials(served: ServedGateway) -> None:
    bodies = served.gateway.bodies
    slow = [await holding(served, MAX_BODY, token="any-token") for _ in range(TOTAL // MAX_BODY)]
    try:
        await eventually(lambda: as_awaitable(bodies.held == TOTAL))  # at the edge
        status, _, error = await post(served, b"{}", token="any-token")
        assert status == 503
        assert "all requests" in str(error["message"])
        status, _, error = await post(served, b"{}")
        assert status == 503
    finally:
        for connection in slow:
            await connection.close()
    await eventually(lambda: as_awaitable(bodies.held == 0))


async def test_a_chunked_body_is_counted_as_it_arrives(served: ServedGateway) -> None:
    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    async with aiohttp.ClientSession() as session:
        url = f"{served.base}/v1/users"
        async with session.post(url, data=chunks(registration(ANONYMOUS))) as response:
            assert response.status == 200
        async with session.post(url, data=chunks(registration(ANONYMOUS + 1))) as response:
            assert response.status == 413
        async with session.post(
            url,
            data=chunks(registration(MAX_BODY + 1)),
            headers={"Authorization": "Bearer any-token"},
        ) as response:
            assert response.status == 413
    assert served.gateway.bodies.held == 0


async def test_a_compressed_body_is_counted_as_it_inflates(served: ServedGateway) -> None:
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        url = f"{served.base}/v1/users"
        fits = gzip.compress(registration(ANONYMOUS))
        async with session.post(url, data=fits, headers=headers) as response:
            assert response.status == 200
        # A few dozen bytes on the wire, past the anonymous share once inflated.
        inflates = gzip.compress(registration(ANONYMOUS + 1))
        assert len(inflates) < ANONYMOUS
        async with session.post(url, data=inflates, headers=headers) as response:
            assert response.status == 413
    assert served.gateway.bodies.held == 0
