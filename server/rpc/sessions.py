"""SessionService over gRPC: proto ↔ model, nothing else."""

from __future__ import annotations

import grpc

from server.context import current_user
from server.rpc.convert import session_to_proto
from server.services.sessions import SessionService
from taskgate.v1 import session_service_pb2 as pb
from taskgate.v1 import session_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[object, object]


class SessionServicer(pb_grpc.SessionServiceServicer):
    def __init__(self, *, sessions: SessionService) -> None:
        self._sessions = sessions

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: Context
    ) -> pb.CreateSessionResponse:
        login = await self._sessions.login(request.username, request.password, request.device_token)
        return pb.CreateSessionResponse(
            session=session_to_proto(login.session), device_token=login.device_token
        )

    async def GetSession(
        self, request: pb.GetSessionRequest, context: Context
    ) -> pb.GetSessionResponse:
        session = await self._sessions.get(current_user(), request.session_id)
        return pb.GetSessionResponse(session=session_to_proto(session))

    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: Context
    ) -> pb.DeleteSessionResponse:
        await self._sessions.logout(current_user(), request.session_id)
        return pb.DeleteSessionResponse()
