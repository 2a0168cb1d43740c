"""Thin helpers over the generated stubs, for tests that act as a client would."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import session_service_pb2_grpc as session_grpc
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


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    for detail in rich_status(error).details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            return {v.field: v.description for v in bad_request.field_violations}
    raise AssertionError("no google.rpc.BadRequest detail")
