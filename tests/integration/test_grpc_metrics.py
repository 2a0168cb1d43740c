"""The gRPC metrics interceptor on real servers: every final code, unary and streaming,
each call counted once.

First on a bare grpc.aio server whose TaskService misbehaves on request (the
interceptor alone, so an escaped exception is UNKNOWN), then on the real
server, where the codes come from the error mapping, the auth check, the
request reader, deadlines and cancellations.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from server.app import App
from server.config import Settings
from server.interceptors.metrics import MetricsInterceptor
from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as task_grpc
from tests.support.clients import PASSWORD, Client, grayscale, task_user
from tests.support.hashers import SlowHasher
from tests.support.images import image_bytes
from tests.support.metrics import settles, value
from tests.support.servers import serving

SERVICE = "taskgate.v1.TaskService"
CODES = ("OK", "NOT_FOUND", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN")


class Misbehaving(task_grpc.TaskServiceServicer):
    """GetTask and WatchTask end as their task_id says: ok, abort, slow (never) or boom."""

    async def GetTask(self, request: pb.GetTaskRequest, context: Any) -> pb.GetTaskResponse:
        await self._outcome(request.task_id, context)
        return pb.GetTaskResponse(task=pb.Task(task_id=request.task_id))

    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Any
    ) -> AsyncIterator[pb.WatchTaskResponse]:
        yield pb.WatchTaskResponse(task=pb.Task(task_id=request.task_id))
        while request.task_id == "flood":  # until the flow-control window is full
            yield pb.WatchTaskResponse(task=pb.Task(task_id="flood", error="x" * 1_000_000))
        await self._outcome(request.task_id, context)
        yield pb.WatchTaskResponse(task=pb.Task(task_id=request.task_id))

    @staticmethod
    async def _outcome(how: str, context: Any) -> None:
        if how == "abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such task")
        if how == "slow":
            await asyncio.sleep(30)
        if how == "boom":
            raise RuntimeError("a bug")


@pytest.fixture
async def bare() -> AsyncIterator[tuple[CollectorRegistry, task_grpc.TaskServiceStub]]:
    registry = CollectorRegistry()
    server = grpc.aio.server(interceptors=[MetricsInterceptor(registry=registry)])
    task_grpc.add_TaskServiceServicer_to_server(Misbehaving(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield registry, task_grpc.TaskServiceStub(channel)
    finally:
        await server.stop(None)


async def _code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _cancelled(call: Any) -> grpc.StatusCode:
    await asyncio.sleep(0.3)
    call.cancel()
    return grpc.StatusCode.CANCELLED


async def test_unary_calls_are_counted_once_with_their_final_code(
    bare: tuple[CollectorRegistry, task_grpc.TaskServiceStub],
) -> None:
    registry, stub = bare
    seen = [
        await _code_of(stub.GetTask(pb.GetTaskRequest(task_id="ok"))),
        await _code_of(stub.GetTask(pb.GetTaskRequest(task_id="abort"))),
        await _code_of(stub.GetTask(pb.GetTaskRequest(task_id="slow"), timeout=0.3)),
        await _cancelled(stub.GetTask(pb.GetTaskRequest(task_id="slow"))),
        await _code_of(stub.GetTask(pb.GetTaskRequest(task_id="boom"))),
    ]
    assert [code.name for code in seen] == list(CODES)
    labels = {"grpc_type": "UNARY", "grpc_service": SERVICE, "grpc_method": "GetTask"}
    for code in CODES:
        await settles(registry, "grpc_server_handled_total", 1, **labels, grpc_code=code)
    assert value(registry, "grpc_server_started_total", **labels) == 5
    assert value(registry, "grpc_server_handling_seconds_count", **labels) == 5
    # A unary side is not a stream: no message counted.
    assert value(registry, "grpc_server_msg_sent_total", **labels) == 0
    assert value(registry, "grpc_server_msg_received_total", **labels) == 0


async def _streamed(call: Any, *, cancel: bool = False) -> grpc.StatusCode:
    await call.read()  # the first message arrived
    if cancel:
        call.cancel()
        return grpc.StatusCode.CANCELLED
    return await _code_of(_drain(call))


async def _drain(call: Any) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


async def test_a_server_stream_is_counted_once_with_its_final_code_and_messages(
    bare: tuple[CollectorRegistry, task_grpc.TaskServiceStub],
) -> None:
    registry, stub = bare

    def watch(how: str, **kwargs: Any) -> Any:
        return stub.WatchTask(pb.WatchTaskRequest(task_id=how), **kwargs)

    seen = [
        await _streamed(watch("ok")),
        await _streamed(watch("abort")),
        await _streamed(watch("slow", timeout=0.5)),
        await _streamed(watch("slow"), cancel=True),
        await _streamed(watch("boom")),
    ]
    assert [code.name for code in seen] == list(CODES)
    labels = {"grpc_type": "SERVER_STREAMING", "grpc_service": SERVICE, "grpc_method": "WatchTask"}
    for code in CODES:
        await settles(registry, "grpc_server_handled_total", 1, **labels, grpc_code=code)
    assert value(registry, "grpc_server_started_total", **labels) == 5
    assert value(registry, "grpc_server_handling_seconds_count", **labels) == 5
    # One message each, and a second for the call that ended OK.
    assert value(registry, "grpc_server_msg_sent_total", **labels) == 6
    assert value(registry, "grpc_server_msg_received_total", **labels) == 0

    # Cancelled while its generator waits at a yield for the window to open: grpc
    # closes the generator (GeneratorExit), and the call is still CANCELLED, once.
    flood = watch("flood")
    await flood.read()
    await asyncio.sleep(0.3)
    flood.cancel()
    await settles(registry, "grpc_server_handled_total", 2, **labels, grpc_code="CANCELLED")
    assert value(registry, "grpc_server_started_total", **labels) == 6
    assert value(registry, "grpc_server_msg_received_total", **labels) == 0


# --- the real server -------------------------------------------------------------------

SLOW_PASSWORD = "a slow password to check"
BUGGY_PASSWORD = "a password that meets a bug"


class ScriptedHasher(SlowHasher):
    """Checks one password forever and fails on another, as a bug would."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, delay=0)

    async def verify(self, password_hash: str | None, password: str, **lane: Any) -> bool:
        if password == SLOW_PASSWORD:
            await asyncio.sleep(30)
        if password == BUGGY_PASSWORD:
            raise RuntimeError("a bug in the hasher")
        return await super().verify(password_hash, password, **lane)


def _labels(kind: str, method: str, **more: str) -> dict[str, str]:
    return {"grpc_type": kind, "grpc_service": SERVICE, "grpc_method": method, **more}


@pytest.fixture
async def real(settings: Settings) -> AsyncIterator[tuple[App, Client]]:
    hasher = ScriptedHasher(settings)
    async with serving(settings, hasher=hasher, embedded_processor=False) as served:
        yield served


async def test_the_real_servers_unary_codes_are_counted_once(
    real: tuple[App, Client],
) -> None:
    """A login: OK, refused by the error mapping, the reader's refusal, past its deadline,
    cancelled, and a bug (INTERNAL, as the error mapping answers it); GetTask without a
    session: the auth interceptor's refusal."""
    app, client = real
    user = await client.register()
    stub = client.sessions

    def login(password: str, **kwargs: Any) -> Any:
        request = session_pb.CreateSessionRequest(username=user.username, password=password)
        return stub.CreateSession(request, **kwargs)

    codes = [
        await _code_of(login(PASSWORD)),
        await _code_of(login("not the password at all")),
        await _code_of(login("x" * 100_000)),
        await _code_of(login(SLOW_PASSWORD, timeout=0.3)),
        await _cancelled(login(SLOW_PASSWORD)),
        await _code_of(login(BUGGY_PASSWORD)),
        await _code_of(client.tasks.GetTask(pb.GetTaskRequest(task_id=_UNKNOWN))),
    ]
    expected = [
        "OK", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CANCELLED",
        "INTERNAL", "UNAUTHENTICATED",
    ]  # fmt: skip
    assert [code.name for code in codes] == expected
    session = _labels("UNARY", "CreateSession", grpc_service="taskgate.v1.SessionService")
    for code in set(expected[:6]):
        await settles(app.registry, "grpc_server_handled_total", 1, **session, grpc_code=code)
    assert value(app.registry, "grpc_server_started_total", **session) == 6
    get = _labels("UNARY", "GetTask", grpc_code="UNAUTHENTICATED")
    await settles(app.registry, "grpc_server_handled_total", 1, **get)


_UNKNOWN = "00000000-0000-4000-8000-000000000000"


async def test_the_real_servers_stream_codes_are_counted_once(real: tuple[App, Client]) -> None:
    app, client = real
    tasks = await task_user(client)
    ended = await tasks.create(image_bytes(), [grayscale()])
    await tasks.cancel(ended.task_id)  # its watch ends at once, OK
    pending = await tasks.create(image_bytes(seed=7), [grayscale()])

    def watch(task_id: str, metadata: Any = tasks.metadata, **kwargs: Any) -> Any:
        request = pb.WatchTaskRequest(task_id=task_id)
        return tasks.stub.WatchTask(request, metadata=metadata, **kwargs)

    codes = [
        await _code_of(_drain(watch(ended.task_id))),
        await _code_of(_drain(watch(_UNKNOWN))),
        await _code_of(_drain(watch(ended.task_id, metadata=()))),
        await _code_of(_drain(watch("x" * 100_000))),
        await _streamed(watch(pending.task_id, timeout=0.5)),
        await _streamed(watch(pending.task_id), cancel=True),
    ]
    expected = [
        "OK", "NOT_FOUND", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED",
        "CANCELLED",
    ]  # fmt: skip
    assert [code.name for code in codes] == expected
    labels = _labels("SERVER_STREAMING", "WatchTask")
    for code in expected:
        await settles(app.registry, "grpc_server_handled_total", 1, **labels, grpc_code=code)
    assert value(app.registry, "grpc_server_started_total", **labels) == 6
    # The task was sent once on each of the three calls that got past auth and the reader.
    assert value(app.registry, "grpc_server_msg_sent_total", **labels) == 3


async def test_a_bidirectional_stream_counts_the_messages_both_ways(
    real: tuple[App, Client],
) -> None:
    app, client = real
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    asked = [reflection_pb2.ServerReflectionRequest(list_services="*") for _ in range(3)]
    answers = [answer async for answer in stub.ServerReflectionInfo(iter(asked))]
    assert len(answers) == 3
    labels = {
        "grpc_type": "BIDI_STREAMING",
        "grpc_service": "grpc.reflection.v1alpha.ServerReflection",
        "grpc_method": "ServerReflectionInfo",
    }
    await settles(app.registry, "grpc_server_handled_total", 1, **labels, grpc_code="OK")
    assert value(app.registry, "grpc_server_msg_received_total", **labels) == 3
    assert value(app.registry, "grpc_server_msg_sent_total", **labels) == 3
