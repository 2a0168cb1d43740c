"""Per-call context: the values bound once for each RPC and read anywhere below.

The request-log interceptor binds the request id, the deadline and the client
address, the auth
interceptor binds the calling user; the logger, the services and the storage
layer read them. Each RPC runs in its own asyncio task, so nothing leaks
between calls.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from uuid import UUID

from server.errors import Unauthenticated

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
user_id: ContextVar[UUID | None] = ContextVar("user_id", default=None)
deadline: ContextVar[float | None] = ContextVar("deadline", default=None)
"""When the caller stops waiting, in ``loop.time()`` seconds; None without a deadline."""
client_address: ContextVar[str | None] = ContextVar("client_address", default=None)
"""The caller's IP address (see :mod:`server.client_address`); None outside a call."""


def current_user() -> UUID:
    """The authenticated caller, or UNAUTHENTICATED on a public method."""
    caller = user_id.get()
    if caller is None:
        raise Unauthenticated("this method needs a session: send authorization: Bearer <id>")
    return caller


def deadline_passed() -> bool:
    end = deadline.get()
    return end is not None and asyncio.get_running_loop().time() >= end


def time_budget(limit: float) -> float:
    """``limit`` seconds, or less when the caller's deadline comes sooner."""
    end = deadline.get()
    if end is None:
        return limit
    return max(0.0, min(limit, end - asyncio.get_running_loop().time()))
