"""Wake-ups for the watchers of tasks, fanned out from one listener.

A watcher registers for its task before it reads it, then waits for its
event; a notification naming the task (or a reconnection of the listener,
after which anything may have been missed) sets the events of its watchers.
The watcher then re-reads the task, so a notification carries no state and
losing one costs at most a slow poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class TaskEvents:
    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Event]] = {}

    @contextmanager
    def watching(self, task_id: str) -> Iterator[asyncio.Event]:
        """An event set on each change of the task, for the time of the ``with``."""
        event = asyncio.Event()
        self._watchers.setdefault(task_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(task_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[task_id]

    def changed(self, task_id: str) -> None:
        """A notification: the task changed."""
        for event in self._watchers.get(task_id, ()):
            event.set()

    def wake_all(self) -> None:
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()

    def __len__(self) -> int:
        """How many watchers are registered."""
        return sum(len(watchers) for watchers in self._watchers.values())
