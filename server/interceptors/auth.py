"""Authentication: ``authorization: Bearer <session_id>`` → the calling user.

Methods in ``public`` need no session. On any other method a missing,
malformed, expired or revoked token is UNAUTHENTICATED; a valid one binds the
user to :data:`server.context.user_id` for the rest of the call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from uuid import UUID

import grpc

from server import context as call_context
from server.errors import Unauthenticated
from server.interceptors.wrap import Context, Continuation, Handler, metadata_value, wrap_handler

Authenticate = Callable[[str], Awaitable[UUID]]

PUBLIC_METHODS = frozenset(
    {
        "/taskgate.v1.UserService/CreateUser",
        "/taskgate.v1.SessionService/CreateSession",
        "/taskgate.v1.TaskService/ListFilters",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)


def bearer_token(header: str | None) -> str:
    if header is None:
        raise Unauthenticated("missing authorization metadata: send Bearer <session_id>")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization metadata must be Bearer <session_id>")
    return token.strip()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, *, authenticate: Authenticate, public: frozenset[str] = PUBLIC_METHODS
    ) -> None:
        self._authenticate = authenticate
        self._public = public

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in self._public:
            return handler
        return wrap_handler(handler, self._scope)

    @asynccontextmanager
    async def _scope(self, context: Context) -> AsyncIterator[None]:
        token = bearer_token(metadata_value(context, "authorization"))
        call_context.user_id.set(await self._authenticate(token))
        yield
