"""The asyncio client (grpc.aio). py-grpc-prometheus's interceptor is sync-only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from google.api import httpbody_pb2

from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import session_service_pb2_grpc as session_grpc
from taskgate.v1 import task_service_pb2 as task_pb
from taskgate.v1 import task_service_pb2_grpc as task_grpc
from taskgate.v1 import user_service_pb2 as user_pb
from taskgate.v1 import user_service_pb2_grpc as user_grpc
from taskgate_client import base
from taskgate_client.transport import Transport


class AsyncClient(base.ClientBase):
    """taskgate over one grpc.aio channel; use ``async with``."""

    def __init__(
        self,
        transport: Transport | str = base.DEFAULT_TRANSPORT,
        *,
        token: str | None = None,
        timeout: float = base.DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(transport, token=token, timeout=timeout)
        self._channel = self.transport.aio_channel()
        self.users = user_grpc.UserServiceStub(self._channel)
        self.sessions = session_grpc.SessionServiceStub(self._channel)
        self.tasks = task_grpc.TaskServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def register(self, username: str, password: str) -> user_pb.User:
        request = base.create_user(username, password)
        return (await self.users.CreateUser(request, **self.call_options())).user

    async def login(self, username: str, password: str) -> session_pb.Session:
        request = base.create_session(username, password)
        reply = await self.sessions.CreateSession(request, **self.call_options())
        self.token = reply.session.session_id
        return reply.session

    async def logout(self) -> None:
        if self.token:
            request = session_pb.DeleteSessionRequest(session_id=self.token)
            await self.sessions.DeleteSession(request, **self.call_options())
        self.token = None

    async def submit(
        self,
        image: bytes,
        filters: Sequence[task_pb.Filter],
        *,
        output_format: task_pb.ImageFormat.ValueType = task_pb.IMAGE_FORMAT_PNG,
        idempotency_key: str | None = None,
    ) -> task_pb.Task:
        request = base.create_task(image, filters, output_format, idempotency_key)
        return (await self.tasks.CreateTask(request, **self.call_options())).task

    async def task(self, task_id: str) -> task_pb.Task:
        request = task_pb.GetTaskRequest(task_id=task_id)
        return (await self.tasks.GetTask(request, **self.call_options())).task

    async def result(self, task_id: str) -> httpbody_pb2.HttpBody:
        """The result image, its chunks (GetTaskResult streams them) joined."""
        request = task_pb.GetTaskResultRequest(task_id=task_id)
        chunks = [c async for c in self.tasks.GetTaskResult(request, **self.call_options())]
        return base.joined(chunks)

    async def cancel(self, task_id: str) -> task_pb.Task:
        request = task_pb.CancelTaskRequest(task_id=task_id)
        return (await self.tasks.CancelTask(request, **self.call_options())).task

    async def watch(
        self,
        task_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the stream's gRPC deadline
    ) -> AsyncIterator[task_pb.Task]:
        request = task_pb.WatchTaskRequest(task_id=task_id)
        async for reply in self.tasks.WatchTask(request, **self.call_options(timeout)):
            yield reply.task
