"""Message size limits and deadlines, at the edge and past it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from server.config import Settings
from taskgate.v1 import user_service_pb2 as user_pb
from tests.support.clients import PASSWORD, Client
from tests.support.servers import serving


@pytest.fixture
async def small_client(settings: Settings) -> AsyncIterator[tuple[Client, int]]:
    async with serving(settings, max_image_bytes=1000) as (app, client):
        yield client, app.settings.max_message_bytes


def request_of_size(size: int) -> user_pb.CreateUserRequest:
    """A CreateUserRequest whose serialized form is exactly ``size`` bytes."""
    request = user_pb.CreateUserRequest(username="", password=PASSWORD)
    overhead = request.ByteSize() + 1 + 3  # tag + a 3-byte length prefix
    request.username = "x" * (size - overhead)
    assert request.ByteSize() == size
    return request


async def test_a_message_at_the_limit_is_read_and_past_it_refused(
    small_client: tuple[Client, int],
) -> None:
    client, limit = small_client
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.users.CreateUser(request_of_size(limit))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # read, then judged
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.users.CreateUser(request_of_size(limit + 1))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.usefixtures("app")
async def test_an_expired_deadline_is_deadline_exceeded(channel: grpc.aio.Channel) -> None:
    client = Client(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.users.CreateUser(
            user_pb.CreateUserRequest(username="slowpoke", password=PASSWORD), timeout=0.000001
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
