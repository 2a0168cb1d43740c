"""Postgres or Redis unreachable: calls answer UNAVAILABLE within the timeout,
health turns NOT_SERVING, and both recover by themselves."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2
from pydantic import SecretStr

from server.app import App
from server.config import Settings
from taskgate.v1 import user_service_pb2 as user_pb
from tests.support.clients import Client, bearer, new_username
from tests.support.net import free_port
from tests.support.proxy import TcpProxy
from tests.support.servers import serving

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))


@pytest.fixture
async def proxies(settings: Settings) -> AsyncIterator[dict[str, TcpProxy]]:
    found = {}
    for name, url in (("postgres", settings.database_url), ("redis", settings.redis_url)):
        parts = urlsplit(url.get_secret_value())
        proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0)
        await proxy.start()
        found[name] = proxy
    yield found
    for proxy in found.values():
        await proxy.close()


@pytest.fixture
async def proxied(
    settings: Settings, proxies: dict[str, TcpProxy]
) -> AsyncIterator[tuple[App, Client]]:
    async with serving(
        settings,
        database_url=SecretStr(
            via(settings.database_url.get_secret_value(), proxies["postgres"].port)
        ),
        redis_url=SecretStr(via(settings.redis_url.get_secret_value(), proxies["redis"].port)),
        db_timeout=0.5,
        redis_timeout=0.5,
    ) as (app, client):
        yield app, client


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def health_is(client: Client, status: int, service: str = "") -> bool:
    return await client.health_status(service) == status


async def succeeds(call: Callable[[], Awaitable[object]]) -> bool:
    """True if the call works, False while it is UNAVAILABLE; anything else fails the test."""
    try:
        await call()
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return False
    return True


@pytest.mark.parametrize("dependency", ["postgres", "redis"])
async def test_outage_is_unavailable_then_recovers(
    proxied: tuple[App, Client], proxies: dict[str, TcpProxy], dependency: str
) -> None:
    _, client = proxied
    user, token = await client.register_and_login()
    request = user_pb.GetUserRequest(user_id="me")
    await client.users.GetUser(request, metadata=bearer(token))

    await proxies[dependency].cut()
    # Registering needs no Redis; GetUser(me) needs Postgres only until the user is cached.
    calls: dict[str, list[Callable[[], Awaitable[object]]]] = {
        "postgres": [lambda: client.login(user.username), client.register],
        "redis": [
            lambda: client.users.GetUser(request, metadata=bearer(token)),
            lambda: client.login(user.username),
        ],
    }
    for call in calls[dependency]:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
        assert time.monotonic() - started < 1.5  # the 0.5 s timeout, and some slack
    for service in ("", "taskgate.v1.UserService", "taskgate.v1.SessionService"):
        await eventually(lambda s=service: health_is(client, NOT_SERVING, s))  # type: ignore[misc]

    await proxies[dependency].start()
    await eventually(lambda: health_is(client, SERVING, "taskgate.v1.UserService"))
    await eventually(
        lambda: succeeds(lambda: client.users.GetUser(request, metadata=bearer(token)))
    )


@pytest.mark.parametrize("dependency", ["postgres", "redis"])
async def test_a_hanging_dependency_is_unavailable_not_a_hang(
    proxied: tuple[App, Client], proxies: dict[str, TcpProxy], dependency: str
) -> None:
    _, client = proxied
    user, _ = await client.register_and_login()
    proxies[dependency].stall()
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.login(user.username)  # needs both
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
    assert time.monotonic() - started < 1.5
    await eventually(lambda: health_is(client, NOT_SERVING))

    proxies[dependency].resume()
    await eventually(lambda: health_is(client, SERVING), within=10)
    await eventually(lambda: succeeds(lambda: client.login(user.username)), within=10)


async def test_the_callers_deadline_bounds_the_wait(
    settings: Settings, proxies: dict[str, TcpProxy], caplog: pytest.LogCaptureFixture
) -> None:
    patient = serving(
        settings,
        database_url=SecretStr(
            via(settings.database_url.get_secret_value(), proxies["postgres"].port)
        ),
        db_timeout=10.0,
    )
    async with patient as (_, client):
        try:
            proxies["postgres"].stall()
            with caplog.at_level(logging.INFO, logger="taskgate.access"):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await client.users.CreateUser(
                        user_pb.CreateUserRequest(username="hasty", password="long enough"),
                        timeout=0.3,
                    )
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

                async def logged() -> bool:  # the server logs once it has given up too
                    return any(r.name == "taskgate.access" for r in caplog.records)

                await eventually(logged)
            (line,) = [r for r in caplog.records if r.name == "taskgate.access"]
            assert line.fields["code"] == "DEADLINE_EXCEEDED"  # type: ignore[attr-defined]
            assert line.fields["duration_ms"] < 1000  # type: ignore[attr-defined]
        finally:
            proxies["postgres"].resume()


async def test_server_starts_with_postgres_unreachable(settings: Settings) -> None:
    unreachable = serving(
        settings,
        database_url=SecretStr(via(settings.database_url.get_secret_value(), free_port())),
        db_timeout=0.5,
    )
    async with unreachable as (_, client):
        assert await client.health_status() == NOT_SERVING
        assert await client.health_status("taskgate.v1.UserService") == NOT_SERVING
        # Alive all the same: an orchestrator must not restart it for its database.
        assert await client.health_status("liveness") == SERVING
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.register()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 1.5


async def test_postgres_recovery_is_quick_after_a_long_outage(
    proxied: tuple[App, Client], proxies: dict[str, TcpProxy]
) -> None:
    """psycopg_pool's doubling reconnect delay once kept calls
    UNAVAILABLE for 13-17 s after the database was back."""
    _, client = proxied
    user, _ = await client.register_and_login()
    await proxies["postgres"].cut()
    await eventually(lambda: health_is(client, NOT_SERVING))
    await asyncio.sleep(8)  # long enough for the pool's delay to reach 8 s, had it kept doubling
    await proxies["postgres"].start()
    back = time.monotonic()
    await eventually(lambda: succeeds(lambda: client.login(user.username)), within=10)
    recovered = time.monotonic() - back
    await eventually(lambda: health_is(client, SERVING), within=3)
    print(f"recovered {recovered:.2f}s after Postgres came back")
    assert recovered < 3.0


async def test_logins_during_an_outage_use_up_nothing(
    proxied: tuple[App, Client], proxies: dict[str, TcpProxy], settings: Settings
) -> None:
    """Retrying through an outage once locked the owner out."""
    _, client = proxied
    user, _ = await client.register_and_login()
    await proxies["postgres"].cut()
    for _ in range(settings.login_rate_limit + 1):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.login(user.username)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await proxies["postgres"].start()
    await eventually(lambda: succeeds(lambda: client.login(user.username)), within=3)


async def test_registrations_answered_unavailable_use_up_nothing(
    settings: Settings, proxies: dict[str, TcpProxy]
) -> None:
    """CreateUser calls answered UNAVAILABLE during an outage once counted toward
    the address's register limit: after the outage it was refused for the window."""
    async with serving(
        settings,
        database_url=SecretStr(
            via(settings.database_url.get_secret_value(), proxies["postgres"].port)
        ),
        db_timeout=0.5,
        client_register_limit=2,
    ) as (_, client):
        await proxies["postgres"].cut()
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.register()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
        await proxies["postgres"].start()
        await eventually(lambda: succeeds(client.register), within=3)
        await client.register()  # the limit's two, both still there


async def test_registrations_whose_deadline_passed_on_our_side_use_up_nothing(
    settings: Settings, proxies: dict[str, TcpProxy]
) -> None:
    """A stalled Postgres: each call's deadline passes while it waits on us."""
    async with serving(
        settings,
        database_url=SecretStr(
            via(settings.database_url.get_secret_value(), proxies["postgres"].port)
        ),
        db_timeout=10.0,
        client_register_limit=2,
    ) as (_, client):
        try:
            proxies["postgres"].stall()
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await client.users.CreateUser(
                        user_pb.CreateUserRequest(username=new_username(), password="long enough"),
                        timeout=0.3,
                    )
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            proxies["postgres"].resume()
        await eventually(lambda: succeeds(client.register), within=5)
        await client.register()
