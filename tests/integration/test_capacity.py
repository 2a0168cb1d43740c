"""Calls in flight: the server-wide budget, the health checks' own budget, and
each user's streams, at the edge and past it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from server.app import App
from server.config import Settings
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import user_service_pb2 as user_pb
from tests.support.clients import (
    PASSWORD,
    Client,
    Tasks,
    grayscale,
    new_username,
    rich_status,
    task_user,
)
from tests.support.hashers import BlockingHasher
from tests.support.images import image_bytes
from tests.support.polling import as_awaitable, eventually
from tests.support.servers import serving

SERVING = health_pb2.HealthCheckResponse.SERVING


def quota_failure(error: grpc.aio.AioRpcError) -> tuple[str, str, float]:
    """The QuotaFailure violation's subject and description, and the RetryInfo delay."""
    quota = error_details_pb2.QuotaFailure()
    retry = error_details_pb2.RetryInfo()
    details = rich_status(error).details
    assert any(d.Unpack(quota) for d in details), details
    assert any(d.Unpack(retry) for d in details), details
    (violation,) = quota.violations
    return violation.subject, violation.description, retry.retry_delay.ToNanoseconds() / 1e9


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_health_checks_answer_while_every_call_slot_is_held(settings: Settings) -> None:
    limit = 3
    hasher = BlockingHasher(settings, workers=limit, queue=0)
    async with serving(settings, hasher=hasher, max_concurrent_rpcs=limit) as (app, client):
        user = await client.register()
        held = [asyncio.ensure_future(client.login(user.username)) for _ in range(limit)]
        try:
            await eventually(lambda: as_awaitable(hasher.admitted == limit))
            assert app.call_limiter.calls.used == limit  # at the edge: all admitted
            error = await refusal(
                client.users.CreateUser(
                    user_pb.CreateUserRequest(username=new_username(), password=PASSWORD)
                )
            )
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            subject, description, delay = quota_failure(error)
            assert (subject, description) == ("server", "at most 3 calls in flight")
            assert delay == 1.0
            assert await client.health_status() == SERVING  # never competes with them
            assert await client.health_status("taskgate.v1.TaskService") == SERVING
        finally:
            hasher.release.set()
            await asyncio.gather(*held)
        await client.register()  # served again
        assert app.call_limiter.calls.used == 0


async def test_health_checks_have_a_bounded_budget_of_their_own(settings: Settings) -> None:
    async with serving(settings, max_concurrent_health_rpcs=2) as (app, client):
        watches = [client.health.Watch(health_pb2.HealthCheckRequest()) for _ in range(2)]
        try:
            for watch in watches:
                assert (await watch.read()).status == SERVING
            error = await refusal(client.health.Check(health_pb2.HealthCheckRequest()))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert quota_failure(error)[1] == "at most 2 health checks in flight"
            await client.register()  # user calls do not share that budget
        finally:
            for watch in watches:
                watch.cancel()
        await eventually(lambda: as_awaitable(app.call_limiter.health.used == 0))
        assert await client.health_status() == SERVING


@pytest.fixture
async def watched(settings: Settings) -> AsyncIterator[tuple[App, Client, Tasks, str]]:
    async with serving(settings, embedded_processor=False, max_streams_per_user=3) as (
        app,
        client,
    ):
        tasks = await task_user(client)
        task = await tasks.create(image_bytes(), [grayscale()])
        yield app, client, tasks, task.task_id


def watch(tasks: Tasks, task_id: str) -> Any:
    return tasks.stub.WatchTask(pb.WatchTaskRequest(task_id=task_id), metadata=tasks.metadata)


async def test_a_user_may_hold_only_so_many_streams(
    watched: tuple[App, Client, Tasks, str],
) -> None:
    app, client, tasks, task_id = watched
    streams = [watch(tasks, task_id) for _ in range(3)]
    try:
        for stream in streams:  # at the edge: all three served
            assert (await stream.read()).task.status == pb.TASK_STATUS_PENDING
        error = await refusal(watch(tasks, task_id).read())
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        subject, description, _ = quota_failure(error)
        user = (
            await client.users.GetUser(
                user_pb.GetUserRequest(user_id="me"), metadata=tasks.metadata
            )
        ).user
        assert subject == f"user:{user.user_id}"
        assert description == "at most 3 concurrent streams per user"
        # Another user's streams and calls are not affected.
        other = await task_user(client)
        own = await other.create(image_bytes(), [grayscale()])
        other_stream = watch(other, own.task_id)
        assert (await other_stream.read()).task.status == pb.TASK_STATUS_PENDING
        other_stream.cancel()
        assert (await tasks.get(task_id)).status == pb.TASK_STATUS_PENDING  # unary: no limit
        # One ends: the user may open another.
        streams.pop().cancel()
        await eventually(
            lambda: as_awaitable(app.stream_limiter.streams_of(UUID(user.user_id)) == 2)
        )
        again = watch(tasks, task_id)
        streams.append(again)
        assert (await again.read()).task.status == pb.TASK_STATUS_PENDING
    finally:
        for stream in streams:
            stream.cancel()
    await eventually(lambda: as_awaitable(app.stream_limiter.open_streams == 0), within=1.0)
    assert len(app.tasks._events) == 0


async def test_a_stream_refused_by_auth_takes_no_slot(
    watched: tuple[App, Client, Tasks, str],
) -> None:
    app, client, _, task_id = watched
    error = await refusal(client.tasks.WatchTask(pb.WatchTaskRequest(task_id=task_id)).read())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert app.stream_limiter.open_streams == 0
    assert app.call_limiter.calls.used == 0
