"""The hashing pool's scheduler: the trusted lane first, usernames in turn, bounded
waits; and the device tokens that put a returning user's login in the trusted lane."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import grpc
import pytest

from server.config import Settings
from server.errors import ResourceExhausted
from server.services.rules import SESSION_ID_LENGTH
from taskgate.v1 import session_service_pb2 as session_pb
from tests.support.clients import PASSWORD, Client, field_violations
from tests.support.hashers import BlockingHasher, SteadyHasher
from tests.support.servers import serving


async def until(condition: Any, within: float = 5.0) -> None:
    ends = time.monotonic() + within
    while not condition():
        assert time.monotonic() < ends, "condition not reached in time"
        await asyncio.sleep(0.005)


async def admitted(
    hasher: BlockingHasher, *calls: Coroutine[Any, Any, bool]
) -> list[asyncio.Task[bool]]:
    """Starts ``calls`` one by one, each admitted (running or waiting) before the next."""
    tasks = []
    for call in calls:
        before = hasher.admitted
        tasks.append(asyncio.ensure_future(call))
        await until(lambda before=before: hasher.admitted > before)
    return tasks


async def test_trusted_hashes_run_before_every_open_one(settings: Settings) -> None:
    hasher = BlockingHasher(settings, workers=1, queue=8)
    try:
        tasks = await admitted(
            hasher,
            hasher.verify(None, "running", key="someone"),
            *(hasher.verify(None, f"guess-{n}", key=f"guess{n}") for n in range(3)),
            hasher.verify(None, "returning", key="owner", trusted=True),
        )
        hasher.release.set()
        await asyncio.gather(*tasks)
        assert hasher.order == ["running", "returning", "guess-0", "guess-1", "guess-2"]
    finally:
        hasher.close()


async def test_usernames_take_turns_and_one_cannot_fill_the_queue(settings: Settings) -> None:
    hasher = BlockingHasher(settings, workers=1, queue=8, per_username=2)
    try:
        tasks = await admitted(
            hasher,
            hasher.verify(None, "running", key="someone"),
            hasher.verify(None, "victim-1", key="victim"),
            hasher.verify(None, "victim-2", key="victim"),
            hasher.verify(None, "other-1", key="other"),
        )
        started_at = time.monotonic()
        with pytest.raises(ResourceExhausted):  # a third for one name: at once
            await hasher.verify(None, "victim-3", key="victim")
        assert time.monotonic() - started_at < 0.5
        # ...while another name still gets in, and in the same lane.
        tasks += await admitted(hasher, hasher.verify(None, "another-1", key="another"))
        hasher.release.set()
        await asyncio.gather(*tasks)
        assert hasher.order == ["running", "victim-1", "other-1", "another-1", "victim-2"]
    finally:
        hasher.close()


async def test_a_full_lane_refuses_at_once_and_leaves_the_other_lane_open(
    settings: Settings,
) -> None:
    hasher = BlockingHasher(settings, workers=1, queue=1)
    try:
        tasks = await admitted(
            hasher,
            hasher.verify(None, "running", key="a"),
            hasher.verify(None, "waiting", key="b"),
        )
        with pytest.raises(ResourceExhausted):
            await hasher.verify(None, "refused", key="c")
        with pytest.raises(ResourceExhausted):  # what a login asks before its database query
            hasher.check_room(key="c")
        hasher.check_room(key="d", trusted=True)
        tasks += await admitted(hasher, hasher.verify(None, "returning", key="d", trusted=True))
        hasher.release.set()
        await asyncio.gather(*tasks)
        assert hasher.order == ["running", "returning", "waiting"]
        assert hasher.admitted == 0
    finally:
        hasher.close()


async def test_a_hash_waits_at_most_max_wait_and_is_never_run(settings: Settings) -> None:
    hasher = BlockingHasher(settings, workers=1, queue=8, max_wait=0.2)
    try:
        (running,) = await admitted(hasher, hasher.verify(None, "running", key="a"))
        started_at = time.monotonic()
        with pytest.raises(ResourceExhausted):
            await hasher.verify(None, "too late", key="b")
        assert 0.15 < time.monotonic() - started_at < 1.0
        assert hasher.admitted == 1
        hasher.release.set()
        await running
        assert hasher.order == ["running"]
    finally:
        hasher.close()


async def test_a_waiting_hash_whose_caller_left_is_dropped_unrun(settings: Settings) -> None:
    hasher = BlockingHasher(settings, workers=1, queue=8)
    try:
        running, waiting = await admitted(
            hasher,
            hasher.verify(None, "running", key="a"),
            hasher.verify(None, "abandoned", key="b"),
        )
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert hasher.admitted == 1
        hasher.release.set()
        await running
        assert hasher.order == ["running"]
        assert hasher.admitted == 0
    finally:
        hasher.close()


async def test_an_honest_burst_of_registrations_waits_its_turn(settings: Settings) -> None:
    """Eight registrations at once on a one-thread pool whose hashes are slow (a busy
    machine) were refused past workers + 4 with "busy checking passwords"."""
    hasher = SteadyHasher(settings, seconds=0.05, workers=1)
    async with serving(settings, hasher=hasher) as (_, client):
        users = await asyncio.gather(*(client.register() for _ in range(8)))
        assert len({u.user_id for u in users}) == 8


async def login(
    client: Client, username: str, password: str = PASSWORD, device_token: str = ""
) -> session_pb.CreateSessionResponse:
    response: session_pb.CreateSessionResponse = await client.sessions.CreateSession(
        session_pb.CreateSessionRequest(
            username=username, password=password, device_token=device_token
        )
    )
    return response


async def test_a_login_gets_a_device_token_that_its_next_logins_keep(
    channel: grpc.aio.Channel,
) -> None:
    client = Client(channel)
    user = await client.register()
    first = await login(client, user.username)
    assert len(first.device_token) == SESSION_ID_LENGTH
    again = await login(client, user.username, device_token=first.device_token)
    assert again.device_token == first.device_token
    assert again.session.session_id != first.session.session_id
    elsewhere = await login(client, user.username)
    assert elsewhere.device_token not in ("", first.device_token)


async def test_a_wrong_password_revokes_the_device_token(channel: grpc.aio.Channel) -> None:
    client = Client(channel)
    user = await client.register()
    token = (await login(client, user.username)).device_token
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await login(client, user.username, "not the password", device_token=token)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = await login(client, user.username, device_token=token)
    assert after.device_token != token  # the old one proves nothing any more


async def test_a_device_token_proves_only_its_own_users_login(settings: Settings) -> None:
    hasher = BlockingHasher(settings, workers=1, queue=8)
    hasher.release.set()
    async with serving(settings, hasher=hasher) as (_, client):
        owner, other = await client.register(), await client.register()
        token = (await login(client, owner.username)).device_token
        hasher.release.clear()
        del hasher.order[:]
        tasks = [asyncio.ensure_future(login(client, owner.username, "running hash"))]
        await until(lambda: hasher.admitted == 1)
        tasks.append(asyncio.ensure_future(login(client, other.username, "open lane")))
        await until(lambda: hasher.admitted == 2)
        tasks.append(asyncio.ensure_future(login(client, other.username, device_token=token)))
        await until(lambda: hasher.admitted == 3)
        hasher.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert hasher.order == ["running hash", "open lane", PASSWORD]  # no skipping the line
        last = results[2]
        assert isinstance(last, session_pb.CreateSessionResponse)
        assert last.device_token != token


async def test_a_returning_login_overtakes_a_flood_of_guesses(settings: Settings) -> None:
    hasher = BlockingHasher(settings, workers=1, queue=16)
    hasher.release.set()
    async with serving(settings, hasher=hasher) as (_, client):
        user = await client.register()
        token = (await login(client, user.username)).device_token
        hasher.release.clear()
        del hasher.order[:]
        flood = []
        for n in range(6):
            flood.append(asyncio.ensure_future(login(client, f"nobody{n}", f"guess-{n}-xx")))
            await until(lambda n=n: hasher.admitted == n + 1)
        returning = asyncio.ensure_future(login(client, user.username, device_token=token))
        await until(lambda: hasher.admitted == 7)
        hasher.release.set()
        assert (await returning).device_token == token
        await asyncio.gather(*flood, return_exceptions=True)
        assert hasher.order[:2] == ["guess-0-xx", PASSWORD]


async def test_a_malformed_device_token_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    client = Client(channel)
    user = await client.register()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await login(client, user.username, device_token="not-a-token")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "device_token" in field_violations(info.value)
