"""The hashing pool's scheduler: the trusted lane first, usernames in turn, bounded
waits; and the device tokens that put a returning user's login in the trusted lane."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
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


@pytest.fixture
async def lanes(settings: Settings) -> AsyncIterator[tuple[Client, BlockingHasher]]:
    hasher = BlockingHasher(settings, workers=1, queue=16)
    hasher.release.set()
    async with serving(settings, hasher=hasher) as (_, client):
        yield client, hasher


async def goes_first(
    client: Client, hasher: BlockingHasher, username: str, token: str
) -> tuple[bool, str]:
    """Whether a login of ``username`` with ``token`` overtakes queued guesses at unknown
    names (it runs right after the one hash running when it came); its new device token."""
    hasher.release.clear()
    del hasher.order[:]
    flood = []
    for n in range(3):
        flood.append(asyncio.ensure_future(login(client, f"nobody{n}", f"guess-{n}-xx")))
        await until(lambda n=n: hasher.admitted == n + 1)
    returning = asyncio.ensure_future(login(client, username, device_token=token))
    await until(lambda: hasher.admitted == 4)
    hasher.release.set()
    new_token = (await returning).device_token
    await asyncio.gather(*flood, return_exceptions=True)
    assert new_token not in ("", token)  # every successful login replaces it
    return hasher.order.index(PASSWORD) == 1, new_token


async def test_a_returning_login_overtakes_a_flood_of_guesses(
    lanes: tuple[Client, BlockingHasher],
) -> None:
    client, hasher = lanes
    user = await client.register()
    first = (await login(client, user.username)).device_token
    assert len(first) == SESSION_ID_LENGTH
    assert not (await goes_first(client, hasher, user.username, ""))[0]
    ahead, second = await goes_first(client, hasher, user.username, first)
    assert ahead
    assert (await goes_first(client, hasher, user.username, second))[0]


async def test_a_replaced_device_token_proves_nothing(
    lanes: tuple[Client, BlockingHasher],
) -> None:
    client, hasher = lanes
    user = await client.register()
    first = (await login(client, user.username)).device_token
    await login(client, user.username, device_token=first)  # replaces it
    assert not (await goes_first(client, hasher, user.username, first))[0]


async def test_a_wrong_password_revokes_the_device_token(
    lanes: tuple[Client, BlockingHasher],
) -> None:
    client, hasher = lanes
    user = await client.register()
    token = (await login(client, user.username)).device_token
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await login(client, user.username, "not the password", device_token=token)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not (await goes_first(client, hasher, user.username, token))[0]


async def test_a_device_token_proves_only_its_own_users_login(
    lanes: tuple[Client, BlockingHasher],
) -> None:
    client, hasher = lanes
    owner, other = await client.register(), await client.register()
    token = (await login(client, owner.username)).device_token
    assert not (await goes_first(client, hasher, other.username, token))[0]


async def test_a_malformed_device_token_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    client = Client(channel)
    user = await client.register()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await login(client, user.username, device_token="not-a-token")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "device_token" in field_violations(info.value)
