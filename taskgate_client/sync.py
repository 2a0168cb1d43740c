"""The blocking client, with py-grpc-prometheus client metrics."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import grpc
from google.api import httpbody_pb2
from prometheus_client import CollectorRegistry
from py_grpc_prometheus.prometheus_client_interceptor import PromClientInterceptor

from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import session_service_pb2_grpc as session_grpc
from taskgate.v1 import task_service_pb2 as task_pb
from taskgate.v1 import task_service_pb2_grpc as task_grpc
from taskgate.v1 import user_service_pb2 as user_pb
from taskgate.v1 import user_service_pb2_grpc as user_grpc
from taskgate_client import base
from taskgate_client.transport import Transport

PNG = task_pb.IMAGE_FORMAT_PNG


class Client(base.ClientBase):
    """taskgate over one channel. Raises ``grpc.RpcError`` as the stubs do.

    Metrics (``grpc_client_started_total``, ``grpc_client_handled_total``, the
    handling-time histogram...) go to ``registry``, or to a registry of the
    client's own (``client.registry``): py-grpc-prometheus registers its
    families up front, so two clients cannot share one without the caller's say.
    """

    def __init__(
        self,
        transport: Transport | str = base.DEFAULT_TRANSPORT,
        *,
        token: str | None = None,
        timeout: float = base.DEFAULT_TIMEOUT,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(transport, token=token, timeout=timeout)
        self.registry = CollectorRegistry() if registry is None else registry
        self._channel = self.transport.sync_channel()
        metrics = PromClientInterceptor(
            enable_client_handling_time_histogram=True, registry=self.registry
        )
        channel = grpc.intercept_channel(self._channel, metrics)
        self.users = user_grpc.UserServiceStub(channel)
        self.sessions = session_grpc.SessionServiceStub(channel)
        self.tasks = task_grpc.TaskServiceStub(channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(self, username: str, password: str) -> user_pb.User:
        request = base.create_user(username, password)
        return self.users.CreateUser(request, **self.call_options()).user

    def login(self, username: str, password: str) -> session_pb.Session:
        """A new session; its id becomes this client's token."""
        request = base.create_session(username, password)
        session = self.sessions.CreateSession(request, **self.call_options()).session
        self.token = session.session_id
        return session

    def logout(self) -> None:
        if self.token:
            request = session_pb.DeleteSessionRequest(session_id=self.token)
            self.sessions.DeleteSession(request, **self.call_options())
        self.token = None

    def filters(self) -> list[task_pb.FilterDescription]:
        reply = self.tasks.ListFilters(task_pb.ListFiltersRequest(), **self.call_options())
        return list(reply.filters)

    def submit(
        self,
        image: bytes,
        filters: Sequence[task_pb.Filter],
        *,
        output_format: task_pb.ImageFormat.ValueType = PNG,
        idempotency_key: str | None = None,
    ) -> task_pb.Task:
        request = base.create_task(image, filters, output_format, idempotency_key)
        return self.tasks.CreateTask(request, **self.call_options()).task

    def task(self, task_id: str) -> task_pb.Task:
        request = task_pb.GetTaskRequest(task_id=task_id)
        return self.tasks.GetTask(request, **self.call_options()).task

    def result(self, task_id: str) -> httpbody_pb2.HttpBody:
        """The result image, its chunks (GetTaskResult streams them) joined."""
        request = task_pb.GetTaskResultRequest(task_id=task_id)
        return base.joined(list(self.tasks.GetTaskResult(request, **self.call_options())))

    def cancel(self, task_id: str) -> task_pb.Task:
        request = task_pb.CancelTaskRequest(task_id=task_id)
        return self.tasks.CancelTask(request, **self.call_options()).task

    def list_tasks(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        status: task_pb.TaskStatus.ValueType = task_pb.TASK_STATUS_UNSPECIFIED,
    ) -> task_pb.ListTasksResponse:
        request = base.list_tasks(page_size, page_token, status)
        return self.tasks.ListTasks(request, **self.call_options())

    def watch(self, task_id: str, *, timeout: float | None = None) -> Iterator[task_pb.Task]:
        """The task on every change; the server ends the stream once the task has ended.

        No deadline unless ``timeout``. Read it to its end: dropping it cancels the call.
        """
        request = task_pb.WatchTaskRequest(task_id=task_id)
        for reply in self.tasks.WatchTask(request, **self.call_options(timeout)):
            yield reply.task
