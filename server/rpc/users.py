"""UserService over gRPC: proto ↔ model, nothing else."""

from __future__ import annotations

import grpc

from server.context import current_user
from server.rpc.convert import user_to_proto
from server.services.users import UserService
from taskgate.v1 import user_service_pb2 as pb
from taskgate.v1 import user_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[object, object]


class UserServicer(pb_grpc.UserServiceServicer):
    def __init__(self, *, users: UserService) -> None:
        self._users = users

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Context
    ) -> pb.CreateUserResponse:
        user = await self._users.register(request.username, request.password)
        return pb.CreateUserResponse(user=user_to_proto(user))

    async def GetUser(self, request: pb.GetUserRequest, context: Context) -> pb.GetUserResponse:
        user = await self._users.get(current_user(), request.user_id)
        return pb.GetUserResponse(user=user_to_proto(user))

    async def DeleteUser(
        self, request: pb.DeleteUserRequest, context: Context
    ) -> pb.DeleteUserResponse:
        await self._users.delete(current_user(), request.user_id)
        return pb.DeleteUserResponse()
