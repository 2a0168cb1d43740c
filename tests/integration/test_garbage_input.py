"""Garbage in every field is INVALID_ARGUMENT naming the field, never INTERNAL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from server.services.rules import PASSWORD_MAX, USERNAME_MAX, USERNAME_MIN
from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import user_service_pb2 as user_pb
from tests.support.clients import PASSWORD, Client, bearer, field_violations

GARBAGE = {
    "empty": "",
    "huge": "x" * 60_000,  # under the 64 KiB request limit; past it: test_limits
    "unicode": "ünïcødé-ユーザー-🙂",
    "nul": "abc\x00def",
    "only-nul": "\x00",
    "control": "line\nbreak\ttab",
    "rtl-override": "admin\u202egnp",
    "spaces": "   ",
}
GARBAGE_PASSWORDS = {k: v for k, v in GARBAGE.items() if k not in {"unicode", "spaces"}}

Call = Callable[[Client, str, str, str], Awaitable[Any]]


async def create_user(client: Client, field: str, value: str, token: str) -> Any:
    fields = {"username": "validname", "password": PASSWORD, field: value}
    return await client.users.CreateUser(user_pb.CreateUserRequest(**fields))


async def create_session(client: Client, field: str, value: str, token: str) -> Any:
    fields = {"username": "validname", "password": PASSWORD, field: value}
    return await client.sessions.CreateSession(session_pb.CreateSessionRequest(**fields))


async def get_user(client: Client, field: str, value: str, token: str) -> Any:
    return await client.users.GetUser(user_pb.GetUserRequest(user_id=value), metadata=bearer(token))


async def delete_user(client: Client, field: str, value: str, token: str) -> Any:
    return await client.users.DeleteUser(
        user_pb.DeleteUserRequest(user_id=value), metadata=bearer(token)
    )


async def get_session(client: Client, field: str, value: str, token: str) -> Any:
    return await client.sessions.GetSession(
        session_pb.GetSessionRequest(session_id=value), metadata=bearer(token)
    )


async def delete_session(client: Client, field: str, value: str, token: str) -> Any:
    return await client.sessions.DeleteSession(
        session_pb.DeleteSessionRequest(session_id=value), metadata=bearer(token)
    )


CASES = [
    *[(create_user, "username", k) for k in GARBAGE],
    *[(create_user, "password", k) for k in GARBAGE_PASSWORDS],
    *[(create_session, "username", k) for k in GARBAGE],
    *[(create_session, "password", k) for k in GARBAGE_PASSWORDS],
    *[(call, "user_id", k) for call in (get_user, delete_user) for k in GARBAGE],
    *[(call, "session_id", k) for call in (get_session, delete_session) for k in GARBAGE],
]


@pytest.mark.usefixtures("app")
@pytest.mark.parametrize(
    ("call", "field", "garbage"), CASES, ids=[f"{c.__name__}-{f}-{g}" for c, f, g in CASES]
)
async def test_garbage_is_invalid_argument(
    channel: grpc.aio.Channel, call: Call, field: str, garbage: str
) -> None:
    client = Client(channel)
    await client.register("validname")
    token = (await client.login("validname")).session_id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(client, field, GARBAGE[garbage], token)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert field in field_violations(info.value)


@pytest.mark.usefixtures("app")
@pytest.mark.parametrize(
    ("username", "ok"),
    [
        ("a" * (USERNAME_MIN - 1), False),
        ("a" * USERNAME_MIN, True),
        ("a" * USERNAME_MAX, True),
        ("a" * (USERNAME_MAX + 1), False),
        ("1abc", False),
        ("Abc", False),
        ("a.b-c_d9", True),
    ],
)
async def test_username_limits(channel: grpc.aio.Channel, username: str, ok: bool) -> None:
    client = Client(channel)
    if ok:
        assert (await client.register(username)).username == username
        return
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.register(username)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.usefixtures("app")
@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("p" * 7, False),
        ("p" * 8, True),
        ("p" * PASSWORD_MAX, True),
        ("p" * 129, False),
        ("pässwörd ünïcode", True),
    ],
)
async def test_password_limits(channel: grpc.aio.Channel, password: str, ok: bool) -> None:
    client = Client(channel)
    if ok:
        user = await client.register(password=password)
        assert (await client.login(user.username, password)).user_id == user.user_id
        return
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.register(password=password)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.usefixtures("app")
@pytest.mark.parametrize(
    "body",
    [b"\x0a\x02\xff\xfe\x12\x0bpassword123", b"\xff\xff\xff", b"\x0a\x80"],
    ids=["bad-utf8", "corrupt", "truncated"],
)
@pytest.mark.parametrize(
    "method", ["/taskgate.v1.UserService/CreateUser", "/taskgate.v1.UserService/GetUser"]
)
async def test_bytes_that_do_not_parse_are_invalid_argument(
    channel: grpc.aio.Channel, method: str, body: bytes
) -> None:
    client = Client(channel)
    _, token = await client.register_and_login()
    call = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(body, metadata=bearer(token))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in (info.value.details() or "")


@pytest.mark.usefixtures("app")
async def test_a_stream_message_that_does_not_parse_is_invalid_argument(
    channel: grpc.aio.Channel,
) -> None:
    reflection = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=bytes,
        response_deserializer=bytes,
    )
    call = reflection(iter([b"\xff\xff\xff"]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
