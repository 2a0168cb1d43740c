"""taskgate_client against a servicer that fails on purpose (pytest-grpc's sync
server around it): retries of UNAVAILABLE from the service config, deadlines,
the session token as call credentials, and the sync client's metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from taskgate.v1 import task_service_pb2 as task_pb
from taskgate.v1 import task_service_pb2_grpc as task_grpc
from taskgate_client import AsyncClient, Client, Transport
from taskgate_client.transport import is_loopback, rpc_status
from tests.support.net import free_port

grpc_max_workers = 4  # read by pytest-grpc's server fixture


class FlakyTasks(task_grpc.TaskServiceServicer):
    """GetTask: UNAVAILABLE ``failures`` times, then the task. ListFilters: slow."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self, failures: int = 2, delay: float = 0.0) -> None:
        self.failures, self.delay = failures, delay
        self.calls = 0
        self.authorization: list[str | None] = []

    def GetTask(self, request: task_pb.GetTaskRequest, context: Any) -> task_pb.GetTaskResponse:
        metadata = dict(context.invocation_metadata())
        with self.lock:
            self.calls += 1
            self.authorization.append(metadata.get("authorization"))
            failing = self.calls <= self.failures
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "down on purpose")
        task = task_pb.Task(task_id=request.task_id, status=task_pb.TASK_STATUS_COMPLETED)
        return task_pb.GetTaskResponse(task=task)

    def ListFilters(self, request: Any, context: Any) -> task_pb.ListFiltersResponse:
        time.sleep(self.delay)
        return task_pb.ListFiltersResponse()


@pytest.fixture(scope="module")
def grpc_addr() -> str:
    """pytest-grpc's own binds 'localhost' and leaves its socket open."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Callable[[Any, grpc.Server], None]:
    return task_grpc.add_TaskServiceServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer() -> FlakyTasks:
    return FlakyTasks()  # type: ignore[abstract]  # the RPCs it leaves out answer UNIMPLEMENTED


@pytest.fixture
def servicer(grpc_servicer: FlakyTasks, grpc_server: grpc.Server) -> FlakyTasks:
    grpc_servicer.reset()
    return grpc_servicer


@pytest.fixture
def client(grpc_addr: str, servicer: FlakyTasks) -> Iterator[Client]:
    with Client(grpc_addr, token="s3ss10n", timeout=5.0) as c:
        yield c


def test_unavailable_twice_then_ok_is_retried_by_the_channel(
    client: Client, servicer: FlakyTasks
) -> None:
    task = client.task("t-1")

    assert task.task_id == "t-1"
    assert servicer.calls == 3


def test_retries_stop_at_max_attempts(grpc_addr: str, servicer: FlakyTasks) -> None:
    servicer.reset(failures=10)
    transport = Transport(grpc_addr, max_attempts=3)
    with Client(transport, timeout=5.0) as client, pytest.raises(grpc.RpcError) as caught:
        client.task("t-1")

    assert rpc_status(caught.value)[0] == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 3


def test_a_call_over_its_deadline_ends_deadline_exceeded(
    grpc_addr: str, servicer: FlakyTasks
) -> None:
    servicer.reset(delay=1.0)
    with Client(grpc_addr, timeout=0.2) as client:
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            client.filters()

    assert rpc_status(caught.value)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - began < 0.9


def test_the_token_goes_as_call_credentials_on_every_attempt(
    client: Client, servicer: FlakyTasks
) -> None:
    client.task("t-1")

    assert servicer.authorization == ["Bearer s3ss10n"] * 3
    assert client.call_options()["credentials"] is not None
    assert client.call_options()["metadata"] is None


def test_without_a_token_nothing_is_sent(grpc_addr: str, servicer: FlakyTasks) -> None:
    servicer.reset(failures=0)
    with Client(grpc_addr) as client:
        client.task("t-1")

    assert servicer.authorization == [None]


def test_a_plaintext_remote_target_carries_the_token_as_metadata() -> None:
    transport = Transport("10.1.2.3:50051")
    with Client(transport, token="tok") as client:
        options = client.call_options()

    assert not is_loopback(transport.target)
    assert transport.channel_credentials() is None
    assert options["credentials"] is None
    assert options["metadata"] == (("authorization", "Bearer tok"),)


def test_the_sync_client_counts_its_calls_with_py_grpc_prometheus(
    grpc_addr: str, servicer: FlakyTasks
) -> None:
    registry = CollectorRegistry()
    with Client(grpc_addr, registry=registry) as client:
        client.task("t-1")
    labels = {"grpc_type": "UNARY", "grpc_service": "taskgate.v1.TaskService",
              "grpc_method": "GetTask"}  # fmt: skip

    assert registry.get_sample_value("grpc_client_started_total", labels) == 1.0
    assert (
        registry.get_sample_value("grpc_client_handled_total", {**labels, "grpc_code": "OK"}) == 1.0
    )
    assert client.registry is registry


def test_two_clients_keep_their_own_registries(grpc_addr: str, servicer: FlakyTasks) -> None:
    with Client(grpc_addr) as first, Client(grpc_addr) as second:
        assert first.registry is not second.registry


async def test_the_async_client_retries_and_sends_the_token(
    grpc_addr: str, servicer: FlakyTasks
) -> None:
    async with AsyncClient(grpc_addr, token="as1nc", timeout=5.0) as client:
        task = await client.task("t-2")

    assert task.task_id == "t-2"
    assert servicer.calls == 3
    assert servicer.authorization == ["Bearer as1nc"] * 3


async def test_the_async_client_keeps_its_deadline(grpc_addr: str, servicer: FlakyTasks) -> None:
    servicer.reset(delay=1.0)
    async with AsyncClient(grpc_addr, timeout=0.2) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.tasks.ListFilters(task_pb.ListFiltersRequest(), **client.call_options())

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
