"""The interceptor chain on a bare grpc.aio server, for every call shape:
domain errors become their status, anything else INTERNAL with the traceback
logged and not sent."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import grpc
import pytest

from server import context
from server.errors import InvalidArgument, NotFound, TaskgateError, Unauthenticated
from server.interceptors.auth import AuthInterceptor
from server.interceptors.errors import INTERNAL_MESSAGE, ErrorInterceptor
from server.interceptors.request_log import RequestLogInterceptor
from tests.support.clients import field_violations

USER = uuid4()
TOKEN = "good-token"


async def authenticate(token: str) -> UUID:
    if token != TOKEN:
        raise Unauthenticated("bad token")
    return USER


def identity(data: bytes) -> bytes:
    return data


async def unary(request: bytes, ctx: Any) -> bytes:
    match request:
        case b"whoami":
            return str(context.current_user()).encode()
        case b"invalid":
            raise InvalidArgument.field("thing", "is wrong")
        case b"bug":
            raise ZeroDivisionError("secret detail")
        case b"base":
            raise TaskgateError("plain")
    return request


async def unary_stream(request: bytes, ctx: Any) -> AsyncIterator[bytes]:
    yield b"one"
    if request == b"fail":
        raise NotFound("gone")
    yield b"two"


async def stream_unary(requests: AsyncIterator[bytes], ctx: Any) -> bytes:
    return b"".join([r async for r in requests])


async def stream_stream(requests: AsyncIterator[bytes], ctx: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        if request == b"bug":
            raise RuntimeError("boom")
        yield request.upper()


HANDLERS = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary, identity, identity),
    "UnaryStream": grpc.unary_stream_rpc_method_handler(unary_stream, identity, identity),
    "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary, identity, identity),
    "StreamStream": grpc.stream_stream_rpc_method_handler(stream_stream, identity, identity),
    "Public": grpc.unary_unary_rpc_method_handler(unary, identity, identity),
}


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(
        interceptors=[
            RequestLogInterceptor(),
            ErrorInterceptor(),
            AuthInterceptor(authenticate=authenticate, public=frozenset({"/test.T/Public"})),
        ]
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.T", HANDLERS)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            yield chan
    finally:
        await server.stop(None)


AUTH = (("authorization", f"Bearer {TOKEN}"),)


async def call_unary(channel: grpc.aio.Channel, body: bytes, method: str = "Unary") -> bytes:
    result: bytes = await channel.unary_unary(f"/test.T/{method}", identity, identity)(
        body, metadata=AUTH
    )
    return result


async def test_the_caller_is_bound_for_the_handler(channel: grpc.aio.Channel) -> None:
    assert await call_unary(channel, b"whoami") == str(USER).encode()


async def test_public_methods_skip_auth(channel: grpc.aio.Channel) -> None:
    assert await channel.unary_unary("/test.T/Public", identity, identity)(b"hi") == b"hi"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary("/test.T/Unary", identity, identity)(b"hi")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_domain_errors_keep_code_message_and_details(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call_unary(channel, b"invalid")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "thing: is wrong"
    assert field_violations(info.value) == {"thing": "is wrong"}


@pytest.mark.parametrize("body", [b"bug", b"base"])
async def test_unexpected_errors_are_internal_and_logged(
    channel: grpc.aio.Channel, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as info:
        await call_unary(channel, body)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == INTERNAL_MESSAGE
    if body == b"bug":
        assert "secret detail" not in (info.value.details() or "")
        assert any("ZeroDivisionError" in (r.exc_text or "") for r in caplog.records)


async def test_streams_are_wrapped_too(channel: grpc.aio.Channel) -> None:
    responses = [
        r
        async for r in channel.unary_stream("/test.T/UnaryStream", identity, identity)(
            b"ok", metadata=AUTH
        )
    ]
    assert responses == [b"one", b"two"]

    call = channel.unary_stream("/test.T/UnaryStream", identity, identity)(b"fail", metadata=AUTH)
    assert await call.read() == b"one"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    async def requests() -> AsyncIterator[bytes]:
        for part in (b"a", b"b"):
            yield part

    joined = await channel.stream_unary("/test.T/StreamUnary", identity, identity)(
        requests(), metadata=AUTH
    )
    assert joined == b"ab"

    async def with_bug() -> AsyncIterator[bytes]:
        yield b"x"
        yield b"bug"

    bidi = channel.stream_stream("/test.T/StreamStream", identity, identity)(
        with_bug(), metadata=AUTH
    )
    assert await bidi.read() == b"X"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await bidi.read()
    assert info.value.code() == grpc.StatusCode.INTERNAL


async def test_access_log_line_has_method_code_and_user(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="taskgate.access"):
        await call_unary(channel, b"whoami")
        with pytest.raises(grpc.aio.AioRpcError):
            await call_unary(channel, b"invalid")
    lines = [r for r in caplog.records if r.name == "taskgate.access"]
    assert [r.fields["code"] for r in lines] == ["OK", "INVALID_ARGUMENT"]  # type: ignore[attr-defined]
    for line in lines:
        assert line.fields["method"] == "/test.T/Unary"  # type: ignore[attr-defined]
        assert line.fields["user_id"] == str(USER)  # type: ignore[attr-defined]
        assert len(line.fields["request_id"]) == 32  # type: ignore[attr-defined]
        assert line.fields["duration_ms"] >= 0  # type: ignore[attr-defined]
