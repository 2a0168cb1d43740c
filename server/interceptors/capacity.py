"""Calls in flight: a server-wide limit that health checks do not share, and a
limit on each user's response streams.

grpc.aio's own ``maximum_concurrent_rpcs`` counts every call, health checks
included, so calls that hold a slot for long (watch streams) could make
``grpc.health.v1.Health/Check`` fail and an orchestrator pull a healthy server.
These limits are kept here instead, as two interceptors:

- :class:`CallLimiter` (outside authentication): every call takes a slot of the
  server-wide budget (``calls``) for as long as it runs, streams included;
  health methods take theirs from a budget of their own (``health``), so no
  number of user calls can starve them, and no number of health calls can
  starve users. Past a budget the call is RESOURCE_EXHAUSTED at once, with a
  QuotaFailure naming the budget, before its request is read.
- :class:`UserStreamLimiter` (inside authentication, outside request reading):
  each authenticated user may hold ``per_user`` response streams at once
  (WatchTask, and any streaming method added later); the next one is
  RESOURCE_EXHAUSTED with a QuotaFailure naming the user, unread.

A slot is given back when its call ends, however it ends (including the
client going away).
"""

from __future__ import annotations

import functools
from uuid import UUID

from server import context as call_context
from server.errors import QuotaExceeded
from server.interceptors.wrap import (
    Context,
    Handler,
    HandlerWrapper,
    Scope,
    ScopedInterceptor,
    wrap_handler,
)

HEALTH_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
    }
)
# A slot frees when another call ends: a client may try again soon.
RETRY_AFTER = 1.0


class Slots:
    """A count of things held at once, up to ``limit`` (one event loop: no lock)."""

    __slots__ = ("limit", "name", "used")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.used = 0

    def take(self) -> None:
        """One slot, or QuotaExceeded when all are held."""
        if self.used >= self.limit:
            raise QuotaExceeded(
                f"the server is answering {self.limit} {self.name} already; try again shortly",
                subject="server",
                description=f"at most {self.limit} {self.name} in flight",
                retry_after=RETRY_AFTER,
            )
        self.used += 1

    def give_back(self) -> None:
        self.used -= 1


class _Held:
    """A slot of ``slots`` for the time of a call."""

    __slots__ = ("_slots",)

    def __init__(self, slots: Slots, context: Context) -> None:
        self._slots = slots

    async def __aenter__(self) -> None:
        self._slots.take()

    async def __aexit__(self, *exc_info: object) -> None:
        self._slots.give_back()


class CallLimiter(ScopedInterceptor):
    def __init__(
        self, *, calls: int, health: int, health_methods: frozenset[str] = HEALTH_METHODS
    ) -> None:
        super().__init__()
        self.calls = Slots("calls", calls)
        self.health = Slots("health checks", health)
        self._health_methods = health_methods

    def scope(self, method: str) -> Scope:
        slots = self.health if method in self._health_methods else self.calls
        return functools.partial(_Held, slots)


class UserStreamLimiter(HandlerWrapper):
    def __init__(self, *, per_user: int) -> None:
        super().__init__()
        self.per_user = per_user
        self._streams: dict[UUID, int] = {}

    @property
    def open_streams(self) -> int:
        """Response streams of authenticated users running now."""
        return sum(self._streams.values())

    def streams_of(self, user: UUID) -> int:
        return self._streams.get(user, 0)

    def wrap(self, method: str, handler: Handler) -> Handler:
        if not handler.response_streaming:
            return handler
        return wrap_handler(handler, self._scope)

    def _scope(self, context: Context) -> _UserStream:
        return _UserStream(self)

    def acquire(self, user: UUID) -> None:
        held = self._streams.get(user, 0)
        if held >= self.per_user:
            raise QuotaExceeded(
                f"you have {held} streams open, the most a user may have at once; "
                "close one, or try again shortly",
                subject=f"user:{user}",
                description=f"at most {self.per_user} concurrent streams per user",
                retry_after=RETRY_AFTER,
            )
        self._streams[user] = held + 1

    def release(self, user: UUID) -> None:
        held = self._streams[user] - 1
        if held:
            self._streams[user] = held
        else:
            del self._streams[user]


class _UserStream:
    """One of the caller's streams, for the time of the call; no limit on public streams."""

    __slots__ = ("_limiter", "_user")

    def __init__(self, limiter: UserStreamLimiter) -> None:
        self._limiter = limiter
        self._user: UUID | None = None

    async def __aenter__(self) -> None:
        user = call_context.user_id.get()
        if user is not None:
            self._limiter.acquire(user)
            self._user = user

    async def __aexit__(self, *exc_info: object) -> None:
        if self._user is not None:
            self._limiter.release(self._user)
