"""Thin helpers over the generated stubs, for tests that act as a client would."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import grpc
from google.api import httpbody_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import session_service_pb2_grpc as session_grpc
from taskgate.v1 import task_service_pb2 as task_pb
from taskgate.v1 import task_service_pb2_grpc as task_grpc
from taskgate.v1 import user_service_pb2 as user_pb
from taskgate.v1 import user_service_pb2_grpc as user_grpc

PASSWORD = "correct horse battery"
Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def new_username() -> str:
    return f"user{secrets.token_hex(6)}"


@dataclass
class Client:
    channel: grpc.aio.Channel

    def __post_init__(self) -> None:
        self.users = user_grpc.UserServiceStub(self.channel)
        self.sessions = session_grpc.SessionServiceStub(self.channel)
        self.tasks = task_grpc.TaskServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def register(self, username: str | None = None, password: str = PASSWORD) -> user_pb.User:
        response = await self.users.CreateUser(
            user_pb.CreateUserRequest(username=username or new_username(), password=password)
        )
        return response.user

    async def login(self, username: str, password: str = PASSWORD) -> session_pb.Session:
        response = await self.sessions.CreateSession(
            session_pb.CreateSessionRequest(username=username, password=password)
        )
        return response.session

    async def register_and_login(self) -> tuple[user_pb.User, str]:
        user = await self.register()
        session = await self.login(user.username)
        return user, session.session_id

    async def health_status(self, service: str = "") -> int:
        response = await self.health.Check(health_pb2.HealthCheckRequest(service=service))
        return int(response.status)


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status the server put in the trailers."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            assert isinstance(value, bytes)
            return status_pb2.Status.FromString(value)
    raise AssertionError("no grpc-status-details-bin in the trailers")


def quota_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    for detail in rich_status(error).details:
        quota = error_details_pb2.QuotaFailure()
        if detail.Unpack(quota):
            return {v.subject: v.description for v in quota.violations}
    raise AssertionError("no google.rpc.QuotaFailure detail")


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    for detail in rich_status(error).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToTimedelta().total_seconds())
    raise AssertionError("no google.rpc.RetryInfo detail")


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    for detail in rich_status(error).details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            return {v.field: v.description for v in bad_request.field_violations}
    raise AssertionError("no google.rpc.BadRequest detail")


class Tasks:
    """A logged-in user's view of TaskService."""

    def __init__(self, client: Client, token: str) -> None:
        self.stub = client.tasks
        self.metadata = bearer(token)

    async def create(
        self,
        image: bytes,
        filters: list[task_pb.Filter],
        *,
        output_format: int = 0,
        idempotency_key: str = "",
        priority: int = 0,
    ) -> task_pb.Task:
        response = await self.stub.CreateTask(
            task_pb.CreateTaskRequest(
                image=image,
                filters=filters,
                output_format=output_format,  # type: ignore[arg-type]
                idempotency_key=idempotency_key,
                priority=priority,
            ),
            metadata=self.metadata,
        )
        return response.task

    async def get(self, task_id: str) -> task_pb.Task:
        response = await self.stub.GetTask(
            task_pb.GetTaskRequest(task_id=task_id), metadata=self.metadata
        )
        return response.task

    async def result(self, task_id: str) -> tuple[str, bytes]:
        """The result's content type and bytes, its streamed chunks joined."""
        chunks = await self.result_chunks(task_id)
        return chunks[0].content_type, b"".join(chunk.data for chunk in chunks)

    async def result_chunks(self, task_id: str) -> list[httpbody_pb2.HttpBody]:
        call = self.stub.GetTaskResult(
            task_pb.GetTaskResultRequest(task_id=task_id), metadata=self.metadata
        )
        return [chunk async for chunk in call]

    async def cancel(self, task_id: str) -> task_pb.Task:
        response = await self.stub.CancelTask(
            task_pb.CancelTaskRequest(task_id=task_id), metadata=self.metadata
        )
        return response.task

    async def list_page(
        self, *, page_size: int = 0, page_token: str = "", status: int = 0
    ) -> task_pb.ListTasksResponse:
        return await self.stub.ListTasks(
            task_pb.ListTasksRequest(
                page_size=page_size,
                page_token=page_token,
                status=status,  # type: ignore[arg-type]
            ),
            metadata=self.metadata,
        )

    async def watch(self, task_id: str) -> list[task_pb.Task]:
        """Every message of a WatchTask stream, to its end."""
        seen = []
        call = self.stub.WatchTask(
            task_pb.WatchTaskRequest(task_id=task_id), metadata=self.metadata
        )
        async for message in call:
            seen.append(message.task)
        return seen

    async def wait_until_ended(self, task_id: str) -> task_pb.Task:
        return (await self.watch(task_id))[-1]


async def task_user(client: Client) -> Tasks:
    _, token = await client.register_and_login()
    return Tasks(client, token)


def grayscale() -> task_pb.Filter:
    return task_pb.Filter(grayscale=task_pb.Filter.Grayscale())


def blur(radius: float) -> task_pb.Filter:
    return task_pb.Filter(blur=task_pb.Filter.Blur(radius=radius))


def resize(width: int, height: int) -> task_pb.Filter:
    return task_pb.Filter(resize=task_pb.Filter.Resize(width=width, height=height))
