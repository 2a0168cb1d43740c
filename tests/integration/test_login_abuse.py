"""What an anonymous client can make login and registration cost: per-address
limits, failures counted only after the password was checked, a bounded hashing
pool, and no session outliving its user."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.rpc import error_details_pb2

from server.config import Settings
from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import user_service_pb2 as user_pb
from tests.conftest import TEST_REDIS_URL
from tests.support.clients import PASSWORD, Client, bearer, new_username, rich_status
from tests.support.hashers import BlockingHasher, GatedHasher, SlowHasher
from tests.support.servers import serving

BEHIND_PROXY: dict[str, Any] = {"trusted_proxies": ("127.0.0.1",)}


def forwarded(address: str) -> tuple[tuple[str, str], ...]:
    return (("x-forwarded-for", f"203.0.113.50, {address}"),)


async def login_from(client: Client, address: str, username: str, password: str = PASSWORD) -> str:
    response = await client.sessions.CreateSession(
        session_pb.CreateSessionRequest(username=username, password=password),
        metadata=forwarded(address),
    )
    return response.session.session_id


async def code_of(call: asyncio.Future[object] | object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    retry = error_details_pb2.RetryInfo()
    assert rich_status(error).details[0].Unpack(retry)
    return float(retry.retry_delay.ToTimedelta().total_seconds())


async def keys(prefix: str, pattern: str) -> list[str]:
    client = aioredis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    try:
        return [key async for key in client.scan_iter(match=f"{prefix}{pattern}")]
    finally:
        await client.aclose()


async def test_abandoned_logins_count_no_failure(settings: Settings, redis_prefix: str) -> None:
    """12 calls with a 5 ms deadline once counted 7 attempts."""
    async with serving(settings, hasher=SlowHasher(settings, delay=0.2)) as (_, client):
        user = await client.register()
        for _ in range(settings.login_rate_limit + 2):
            call = client.sessions.CreateSession(
                session_pb.CreateSessionRequest(username=user.username, password="wrong guess"),
                timeout=0.005,
            )
            assert await code_of(call) == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(0.3)  # let the server finish the abandoned calls
        await client.login(user.username)
        assert await keys(redis_prefix, "login-failures:*") == []


@pytest.mark.usefixtures("app")
async def test_unknown_usernames_leave_no_keys(
    channel: grpc.aio.Channel, redis_prefix: str
) -> None:
    client = Client(channel)
    for _ in range(5):
        call = client.login(new_username())
        assert await code_of(call) == grpc.StatusCode.UNAUTHENTICATED
    assert await keys(redis_prefix, "login-failures:*") == []


async def test_a_stranger_cannot_lock_the_owner_out(settings: Settings) -> None:
    async with serving(settings, **BEHIND_PROXY) as (_, client):
        user = await client.register()
        for _ in range(settings.login_rate_limit):
            call = login_from(client, "198.51.100.1", user.username, "wrong guess")
            assert await code_of(call) == grpc.StatusCode.UNAUTHENTICATED
        call = login_from(client, "198.51.100.1", user.username)
        assert await code_of(call) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await login_from(client, "198.51.100.2", user.username)  # the owner, elsewhere


async def test_logins_are_limited_per_client_address(settings: Settings) -> None:
    limit = 3
    async with serving(settings, client_login_limit=limit, **BEHIND_PROXY) as (_, client):
        user = await client.register()
        for _ in range(limit):  # at the limit: still served
            assert await login_from(client, "198.51.100.7", user.username)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await login_from(client, "198.51.100.7", user.username)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 0 < retry_delay(info.value) <= settings.client_rate_window
        assert await login_from(client, "198.51.100.8", user.username)  # another address


async def test_registrations_are_limited_per_client_address(settings: Settings) -> None:
    limit = 2
    async with serving(settings, client_register_limit=limit, **BEHIND_PROXY) as (_, client):

        async def register(address: str) -> grpc.StatusCode:
            return await code_of(
                client.users.CreateUser(
                    user_pb.CreateUserRequest(username=new_username(), password=PASSWORD),
                    metadata=forwarded(address),
                )
            )

        assert [await register("198.51.100.9") for _ in range(limit + 1)] == [
            *[grpc.StatusCode.OK] * limit,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ]
        assert await register("198.51.100.10") == grpc.StatusCode.OK


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(settings: Settings) -> None:
    async with serving(settings, client_register_limit=1) as (_, client):
        codes = [
            await code_of(
                client.users.CreateUser(
                    user_pb.CreateUserRequest(username=new_username(), password=PASSWORD),
                    metadata=forwarded(f"198.51.100.{n}"),
                )
            )
            for n in (1, 2)
        ]
        assert codes == [grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]


async def test_a_full_hashing_pool_answers_at_once(settings: Settings) -> None:
    """Past the pool and its queue, RESOURCE_EXHAUSTED instead of a queue."""
    hasher = BlockingHasher(settings, workers=1, queue=1)
    async with serving(settings, hasher=hasher) as (_, client):
        user = await client.register()
        admitted = [asyncio.ensure_future(client.login(user.username)) for _ in range(2)]
        try:
            while hasher.admitted < 2:  # noqa: ASYNC110 - one hashing, one queued: the edge
                await asyncio.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.login(user.username)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() - started < 0.5
            assert retry_delay(info.value) > 0
        finally:
            hasher.release.set()
            sessions = await asyncio.gather(*admitted)
        assert all(s.session_id for s in sessions)
        assert hasher.admitted == 0


async def test_a_login_racing_delete_user_leaves_no_live_session(
    settings: Settings, redis_prefix: str
) -> None:
    """A session written after the user's sessions were revoked once stayed live."""
    hasher = GatedHasher(settings)
    async with serving(settings, hasher=hasher) as (_, client):
        user, token = await client.register_and_login()
        hasher.gate.clear()
        hasher.entered.clear()
        login = asyncio.ensure_future(client.login(user.username))
        await hasher.entered.wait()  # the password is checked; the session is not written yet
        await client.users.DeleteUser(
            user_pb.DeleteUserRequest(user_id="me"), metadata=bearer(token)
        )
        hasher.gate.set()
        assert await code_of(login) == grpc.StatusCode.UNAUTHENTICATED
        assert await keys(redis_prefix, "session:*") == []
        async with serving(settings) as (
            _,
            replica,
        ):  # another process: nothing cached, nothing live
            assert await code_of(replica.login(user.username)) == grpc.StatusCode.UNAUTHENTICATED


async def test_logins_refused_as_busy_use_up_nothing(settings: Settings) -> None:
    """A login the hashing pool had no room for once counted toward the address's
    login limit: a busy server locked its clients out for the window."""
    hasher = BlockingHasher(settings, workers=1, queue=0)
    async with serving(settings, hasher=hasher, client_login_limit=2) as (_, client):
        user = await client.register()
        held = asyncio.ensure_future(client.login(user.username))
        try:
            while hasher.admitted < 1:  # noqa: ASYNC110 - the one thread is taken
                await asyncio.sleep(0.01)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await client.login(user.username)
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "busy checking passwords" in (info.value.details() or "")
        finally:
            hasher.release.set()
            await held
        assert (await client.login(user.username)).session_id  # the limit's second


class BuggyHasher(BlockingHasher):
    """Fails, as a bug would, on one password."""

    def _verify(self, password_hash: str | None, password: str) -> bool:
        if password == "a password that meets a bug":
            raise RuntimeError("a bug in the hasher")
        return super()._verify(password_hash, password)


async def test_logins_that_meet_a_bug_use_up_nothing(settings: Settings) -> None:
    hasher = BuggyHasher(settings)
    hasher.release.set()
    async with serving(settings, hasher=hasher, client_login_limit=2) as (_, client):
        user = await client.register()
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.login(user.username, "a password that meets a bug")
            assert info.value.code() == grpc.StatusCode.INTERNAL
        assert (await client.login(user.username)).session_id
        assert (await client.login(user.username)).session_id  # the limit's two
