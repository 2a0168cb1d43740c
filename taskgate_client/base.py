"""What the sync and asyncio clients share: the token, deadlines, the requests."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from google.api import httpbody_pb2

from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import task_service_pb2 as task_pb
from taskgate.v1 import user_service_pb2 as user_pb
from taskgate_client.transport import Auth, Transport

DEFAULT_TIMEOUT = 10.0
DEFAULT_TRANSPORT = Transport()  # 127.0.0.1:50051, plaintext with local credentials


class ClientBase:
    def __init__(self, transport: Transport | str, *, token: str | None, timeout: float) -> None:
        self.transport = Transport(transport) if isinstance(transport, str) else transport
        self.timeout = timeout
        self.token = token

    @property
    def token(self) -> str | None:
        return self._auth.token

    @token.setter
    def token(self, token: str | None) -> None:
        self._auth = Auth(token, self.transport.carries_call_credentials)

    def call_options(self, timeout: float | None = -1.0) -> dict[str, Any]:
        """``timeout=-1``: the client's default deadline; None: no deadline (streams)."""
        return {
            "timeout": self.timeout if timeout is not None and timeout < 0 else timeout,
            "credentials": self._auth.credentials(),
            "metadata": self._auth.metadata(),
        }


def joined(chunks: Sequence[httpbody_pb2.HttpBody]) -> httpbody_pb2.HttpBody:
    """The chunks of a GetTaskResult stream as one HttpBody."""
    content_type = chunks[0].content_type if chunks else ""
    return httpbody_pb2.HttpBody(
        content_type=content_type, data=b"".join(chunk.data for chunk in chunks)
    )


def create_user(username: str, password: str) -> user_pb.CreateUserRequest:
    return user_pb.CreateUserRequest(username=username, password=password)


def create_session(username: str, password: str) -> session_pb.CreateSessionRequest:
    return session_pb.CreateSessionRequest(username=username, password=password)


def create_task(
    image: bytes,
    filters: Sequence[task_pb.Filter],
    output_format: task_pb.ImageFormat.ValueType,
    idempotency_key: str | None,
) -> task_pb.CreateTaskRequest:
    """A retried CreateTask is safe: the key makes the server return the first task."""
    return task_pb.CreateTaskRequest(
        image=image,
        filters=filters,
        output_format=output_format,
        idempotency_key=idempotency_key or secrets.token_hex(16),
    )


def list_tasks(
    page_size: int, page_token: str, status: task_pb.TaskStatus.ValueType
) -> task_pb.ListTasksRequest:
    return task_pb.ListTasksRequest(page_size=page_size, page_token=page_token, status=status)
