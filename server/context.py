"""Per-call context: the values bound once for each RPC and read anywhere below.

The ids a log line carries (request, user, task) are the logging runtime's
(:mod:`taskgate_runtime.logs`), bound here. The request-log interceptor binds
the request id, the deadline and the client address, the auth interceptor
binds the calling user, the task service the task a call is about; the
logger, the services and the storage layer read them. Each RPC runs in its
own asyncio task, so nothing leaks between calls.

A processor runs each task in an asyncio task of its own too, with the task's
id, its owner and the request id that created it bound (:func:`bind_task`): every
log line about the task carries them, whichever process writes it.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from uuid import UUID

from server.errors import Unauthenticated
from taskgate_runtime.logs import request_id, task_id, user_id

__all__ = [
    "bind_task",
    "client_address",
    "current_user",
    "deadline",
    "deadline_passed",
    "request_id",
    "task_id",
    "time_budget",
    "user_id",
]

deadline: ContextVar[float | None] = ContextVar("deadline", default=None)
"""When the caller stops waiting, in ``loop.time()`` seconds; None without a deadline."""
client_address: ContextVar[str | None] = ContextVar("client_address", default=None)
"""The caller's IP address (see :mod:`server.client_address`); None outside a call."""


def bind_task(task: UUID, *, user: UUID | None, request: str | None) -> None:
    """Binds a task, its owner and the id of the request that created it (a processor's run)."""
    task_id.set(task)
    user_id.set(user)
    request_id.set(request)


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
