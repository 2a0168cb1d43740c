"""Authentication: ``authorization: Bearer <session_id>`` → the calling user.

Methods in ``public`` need no session. On any other method a missing,
malformed, expired or revoked token is UNAUTHENTICATED; a valid one binds the
user to :data:`server.context.user_id` for the rest of the call.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from uuid import UUID

from server import context as call_context
from server.errors import Unauthenticated
from server.interceptors.wrap import Context, Scope, ScopedInterceptor, metadata_value
from server.request_rules import public_methods
from taskgate.v1 import session_service_pb2, task_service_pb2, user_service_pb2

Authenticate = Callable[[str], Awaitable[UUID]]

# The product's public methods are declared in the protos (taskgate.v1.method_rules),
# where the gateway's OpenAPI document reads them too.
PUBLIC_METHODS = public_methods(
    (
        user_service_pb2.DESCRIPTOR.services_by_name["UserService"],
        session_service_pb2.DESCRIPTOR.services_by_name["SessionService"],
        task_service_pb2.DESCRIPTOR.services_by_name["TaskService"],
    )
) | frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
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


class AuthInterceptor(ScopedInterceptor):
    def __init__(
        self, *, authenticate: Authenticate, public: frozenset[str] = PUBLIC_METHODS
    ) -> None:
        super().__init__()
        self._authenticate = authenticate
        self._public = public

    def scope(self, method: str) -> Scope | None:
        if method in self._public:
            return None
        return functools.partial(_Authenticated, self._authenticate)


class _Authenticated:
    """Binds the caller for the call, or raises UNAUTHENTICATED before it starts."""

    __slots__ = ("_authenticate", "_context")

    def __init__(self, authenticate: Authenticate, context: Context) -> None:
        self._authenticate = authenticate
        self._context = context

    async def __aenter__(self) -> None:
        token = bearer_token(metadata_value(self._context, "authorization"))
        call_context.user_id.set(await self._authenticate(token))

    async def __aexit__(self, *exc_info: object) -> None:
        return None
