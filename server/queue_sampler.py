"""The queue gauges of a server without an embedded processor.

``tasks_queue_depth``, ``tasks_running`` and ``tasks_oldest_pending_age_seconds``
describe the tasks table, which every server sees: a server samples them
itself (every TASKGATE_PROCESSOR_STATS_INTERVAL), so they stay true when no
processor runs at all — exactly when the queue alerts must fire. With an
embedded processor the processor samples them (once per process is enough).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from server.errors import TaskgateError
from server.metrics import TaskMetrics
from server.storage.postgres.tasks import TaskRepository
from taskgate_runtime import telemetry

log = logging.getLogger(__name__)


class QueueSampler:
    def __init__(self, *, tasks: TaskRepository, metrics: TaskMetrics, interval: float) -> None:
        self._tasks = tasks
        self._metrics = metrics
        self._interval = interval
        self._loop: asyncio.Task[None] | None = None

    async def sample_once(self) -> None:
        stats = await self._tasks.queue_stats()
        self._metrics.queue_depth.set(stats.pending)
        self._metrics.running.set(stats.running)
        self._metrics.oldest_pending_age.set(stats.oldest_pending_seconds)

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="queue-sampler")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    async def _run(self) -> None:
        with telemetry.quiet():
            while True:
                try:
                    await self.sample_once()
                except TaskgateError as exc:
                    log.warning("sampling the queue failed: %s", exc)
                await asyncio.sleep(self._interval)
