"""Users and sessions through a real server, Postgres and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

import grpc
import pytest
from google.rpc import error_details_pb2

from server.config import Settings
from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import user_service_pb2 as user_pb
from tests.support.clients import PASSWORD, Client, bearer, field_violations, rich_status
from tests.support.servers import serving

pytestmark = pytest.mark.usefixtures("app")


@pytest.fixture
def client(channel: grpc.aio.Channel) -> Client:
    return Client(channel)


async def test_register_login_get_logout(client: Client) -> None:
    user = await client.register("alice")
    assert user.username == "alice"
    uuid.UUID(user.user_id)
    assert user.create_time.seconds > 0

    session = await client.login("alice")
    assert len(session.session_id) == 43
    assert session.user_id == user.user_id
    ttl = session.expire_time.ToDatetime() - session.create_time.ToDatetime()
    assert ttl.total_seconds() == pytest.approx(24 * 3600)
    auth = bearer(session.session_id)

    for user_id in ("me", user.user_id):
        got = await client.users.GetUser(user_pb.GetUserRequest(user_id=user_id), metadata=auth)
        assert got.user == user

    got_session = await client.sessions.GetSession(
        session_pb.GetSessionRequest(session_id=session.session_id), metadata=auth
    )
    assert got_session.session == session

    await client.sessions.DeleteSession(
        session_pb.DeleteSessionRequest(session_id=session.session_id), metadata=auth
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.users.GetUser(user_pb.GetUserRequest(user_id="me"), metadata=auth)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_duplicate_username_is_already_exists(client: Client) -> None:
    await client.register("bob")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.register("bob", "another password")
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "bob" in (info.value.details() or "")


async def test_wrong_password_and_unknown_user_get_the_same_answer(client: Client) -> None:
    await client.register("carol")
    answers = []
    for username, password in (("carol", "wrong password"), ("nobody", PASSWORD)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.login(username, password)
        answers.append((info.value.code(), info.value.details()))
    assert answers[0] == answers[1]
    assert answers[0][0] == grpc.StatusCode.UNAUTHENTICATED


async def test_login_is_rate_limited_per_username(client: Client, settings: Settings) -> None:
    await client.register("dave")
    await client.register("erin")
    limit = settings.login_rate_limit
    for _ in range(limit - 1):
        with pytest.raises(grpc.aio.AioRpcError):
            await client.login("dave", "wrong password")
    await client.login("dave")  # limit - 1 failures: the right password still works
    with pytest.raises(grpc.aio.AioRpcError):
        await client.login("dave", "wrong password")  # the limit-th failure
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.login("dave")  # past the limit, even with the right password
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = error_details_pb2.RetryInfo()
    assert rich_status(info.value).details[0].Unpack(retry)
    assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= settings.login_rate_window
    await client.login("erin")  # another username is not affected


async def test_calls_without_a_valid_session_are_unauthenticated(client: Client) -> None:
    request = user_pb.GetUserRequest(user_id="me")
    for metadata in (
        (),
        (("authorization", "Basic abc"),),
        (("authorization", "Bearer"),),
        bearer("x" * 43),
        bearer("not a token"),
        bearer("a" * 5000),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.users.GetUser(request, metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata


async def test_another_users_resources_are_not_found(client: Client) -> None:
    alice, alice_token = await client.register_and_login()
    _, bob_token = await client.register_and_login()
    as_bob = bearer(bob_token)
    calls: list[Awaitable[object]] = [
        client.users.GetUser(user_pb.GetUserRequest(user_id=alice.user_id), metadata=as_bob),
        client.users.DeleteUser(user_pb.DeleteUserRequest(user_id=alice.user_id), metadata=as_bob),
        client.sessions.GetSession(
            session_pb.GetSessionRequest(session_id=alice_token), metadata=as_bob
        ),
        client.sessions.DeleteSession(
            session_pb.DeleteSessionRequest(session_id=alice_token), metadata=as_bob
        ),
        client.users.GetUser(user_pb.GetUserRequest(user_id=str(uuid.uuid4())), metadata=as_bob),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # Alice is untouched.
    got = await client.users.GetUser(
        user_pb.GetUserRequest(user_id="me"), metadata=bearer(alice_token)
    )
    assert got.user == alice


async def test_deleting_a_user_revokes_all_their_sessions(client: Client) -> None:
    user, first = await client.register_and_login()
    second = (await client.login(user.username)).session_id
    await client.users.DeleteUser(user_pb.DeleteUserRequest(user_id="me"), metadata=bearer(first))
    for token in (first, second):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.users.GetUser(user_pb.GetUserRequest(user_id="me"), metadata=bearer(token))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.login(user.username)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The name is free again.
    await client.register(user.username)


async def test_a_user_deleted_through_one_replica_is_gone_from_another(
    client: Client, settings: Settings
) -> None:
    user, token = await client.register_and_login()
    request = user_pb.GetUserRequest(user_id="me")
    async with serving(settings) as (_, replica):
        got = await replica.users.GetUser(request, metadata=bearer(token))  # now cached there
        assert got.user == user
        await client.users.DeleteUser(
            user_pb.DeleteUserRequest(user_id="me"), metadata=bearer(token)
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await replica.users.GetUser(request, metadata=bearer(token))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_request_id_is_echoed_or_made(client: Client) -> None:
    call = client.users.CreateUser(
        user_pb.CreateUserRequest(username="frank", password=PASSWORD),
        metadata=(("x-request-id", "req-123"),),
    )
    await call
    assert ("x-request-id", "req-123") in list(await call.initial_metadata())
    call = client.users.CreateUser(user_pb.CreateUserRequest(username="", password=""))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    made = dict(info.value.initial_metadata() or ())["x-request-id"]
    assert len(made) == 32
    assert set(field_violations(info.value)) == {"username", "password"}


async def test_a_session_expires_by_ttl(settings: Settings) -> None:
    ttl = 1.0
    async with serving(settings, session_ttl=ttl) as (_, client):
        _, token = await client.register_and_login()
        request = user_pb.GetUserRequest(user_id="me")
        await client.users.GetUser(request, metadata=bearer(token))
        await asyncio.sleep(ttl + 0.2)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.users.GetUser(request, metadata=bearer(token))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
