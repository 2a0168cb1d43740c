"""Message size limits per method, compressed requests and deadlines, at the
edge and past it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from server.app import App
from server.config import Settings
from taskgate.v1 import task_service_pb2 as task_pb
from taskgate.v1 import user_service_pb2 as user_pb
from tests.support.clients import PASSWORD, Client, bearer
from tests.support.servers import serving

REQUEST_LIMIT = 2000
IMAGE_LIMIT = 10_000


@pytest.fixture
async def small(settings: Settings) -> AsyncIterator[tuple[App, Client]]:
    async with serving(
        settings, max_image_bytes=IMAGE_LIMIT, max_request_bytes=REQUEST_LIMIT
    ) as served:
        yield served


def request_of_size(size: int) -> user_pb.CreateUserRequest:
    """A CreateUserRequest whose serialized form is exactly ``size`` bytes."""
    request = user_pb.CreateUserRequest(username="", password=PASSWORD)
    overhead = request.ByteSize() + 1 + (2 if size < 16384 else 3)  # tag + length prefix
    request.username = "x" * (size - overhead)
    assert request.ByteSize() == size
    return request


def task_of_size(size: int) -> task_pb.CreateTaskRequest:
    request = task_pb.CreateTaskRequest()
    overhead = 1 + (2 if size < 16384 else 3)
    request.image = b"\x89" * (size - overhead)
    assert request.ByteSize() == size
    return request


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_public_request_at_its_limit_is_read_and_past_it_refused(
    small: tuple[App, Client],
) -> None:
    _, client = small
    at_limit = client.users.CreateUser(request_of_size(REQUEST_LIMIT))
    assert await code_of(at_limit) == grpc.StatusCode.INVALID_ARGUMENT  # read, then judged
    past = client.users.CreateUser(request_of_size(REQUEST_LIMIT + 1))
    assert await code_of(past) == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_only_create_task_takes_a_large_message(small: tuple[App, Client]) -> None:
    app, client = small
    _, token = await client.register_and_login()
    limit = app.settings.max_message_bytes
    at_limit = client.tasks.CreateTask(task_of_size(limit), metadata=bearer(token))
    assert await code_of(at_limit) == grpc.StatusCode.INVALID_ARGUMENT  # read, then judged
    past = client.tasks.CreateTask(task_of_size(limit + 1), metadata=bearer(token))
    assert await code_of(past) == grpc.StatusCode.RESOURCE_EXHAUSTED  # grpc's own limit
    other = client.users.GetUser(
        user_pb.GetUserRequest(user_id="x" * REQUEST_LIMIT), metadata=bearer(token)
    )
    assert await code_of(other) == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_an_anonymous_upload_is_refused_before_it_is_read(
    small: tuple[App, Client],
) -> None:
    app, client = small
    call = client.tasks.CreateTask(task_of_size(app.settings.max_message_bytes))
    assert await code_of(call) == grpc.StatusCode.UNAUTHENTICATED


async def test_compressed_requests_are_bounded_by_their_inflated_size(
    small: tuple[App, Client],
) -> None:
    app, client = small
    gzip = grpc.Compression.Gzip
    fits = client.users.CreateUser(request_of_size(REQUEST_LIMIT), compression=gzip)
    assert await code_of(fits) == grpc.StatusCode.INVALID_ARGUMENT
    # A few hundred bytes on the wire, past the method's limit once inflated.
    past_method = client.users.CreateUser(request_of_size(REQUEST_LIMIT + 1), compression=gzip)
    assert await code_of(past_method) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Past the server-wide limit once inflated: grpc stops inflating and refuses it.
    past_server = client.users.CreateUser(
        request_of_size(app.settings.max_message_bytes + 1), compression=gzip
    )
    assert await code_of(past_server) == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_anonymous_reads_wait_their_turn(settings: Settings) -> None:
    async with serving(settings, max_unauthenticated_reads=1) as (_, client):
        users = await asyncio.gather(*(client.register() for _ in range(8)))
        assert len({u.user_id for u in users}) == 8


@pytest.mark.usefixtures("app")
async def test_an_expired_deadline_is_deadline_exceeded(channel: grpc.aio.Channel) -> None:
    client = Client(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.users.CreateUser(
            user_pb.CreateUserRequest(username="slowpoke", password=PASSWORD), timeout=0.000001
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
