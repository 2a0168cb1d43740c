"""The event feed: a user's task events in order, after an offset.

The consumer-offset pattern over the outbox: a consumer keeps the id of the
last event it handled and asks for what came after it. A user's event ids
increase in commit order, so resuming after the last id seen misses nothing and
repeats nothing. ``watch`` sends what is already there, then follows: it registers for
the user's wake-ups (LISTEN taskgate_task_feed, fanned out in the process)
before each read, so an event committed during a read wakes it again, and a
lost notification costs at most one poll interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import UUID

from server.errors import InvalidArgument
from server.models import TaskEvent
from server.request_rules import expect_declared, field_rule
from server.services.task_events import TaskEvents
from server.storage.postgres.events import EventRepository
from taskgate.v1 import task_service_pb2

PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 100, 1000
# Declared in the protos (and stated in the OpenAPI document): checked here.
for _request, _field in (
    (task_service_pb2.ListTaskEventsRequest, "after"),
    (task_service_pb2.ListTaskEventsRequest, "page_size"),
    (task_service_pb2.WatchTaskEventsRequest, "after"),
):
    expect_declared(field_rule(_request, _field).minimum == 0, f"{_field} >= 0")


class TaskFeed:
    def __init__(
        self, *, events: EventRepository, wakeups: TaskEvents, poll_interval: float
    ) -> None:
        """``wakeups`` is keyed by user id: set when that user has new events."""
        self._events = events
        self._wakeups = wakeups
        self._poll_interval = poll_interval

    async def list(self, caller: UUID, *, after: int, page_size: int) -> list[TaskEvent]:
        """Up to ``page_size`` (default 100, at most 1000) of the caller's events after
        the id ``after``, oldest first; empty when there are none yet."""
        _check_after(after)
        if page_size < 0:
            raise InvalidArgument.field("page_size", "must not be negative")
        limit = min(page_size or PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX)
        return await self._events.list(caller, after=after, limit=limit)

    async def watch(self, caller: UUID, *, after: int) -> AsyncIterator[TaskEvent]:
        """Every event of the caller's after ``after``, then each new one as it commits;
        never ends by itself."""
        _check_after(after)
        with self._wakeups.watching(str(caller)) as woken:
            while True:
                woken.clear()  # before the read: an event after it sets it again
                page = await self._events.list(caller, after=after, limit=PAGE_SIZE_DEFAULT)
                for event in page:
                    yield event
                    after = event.id
                if len(page) == PAGE_SIZE_DEFAULT:
                    continue  # more is waiting
                try:
                    async with asyncio.timeout(self._poll_interval):
                        await woken.wait()
                except TimeoutError:
                    pass


def _check_after(after: int) -> None:
    if after < 0:
        raise InvalidArgument.field("after", "must not be negative")
