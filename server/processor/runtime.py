"""A processor with everything it owns: its own Postgres pool (so a burst of
work never starves API calls), its worker processes, and the processor itself.

The server embeds one (TASKGATE_EMBEDDED_PROCESSOR) sharing the process's
listener; ``python -m server.processor`` runs one alone.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket

from prometheus_client import CollectorRegistry

from server.metrics import TaskMetrics
from server.metrics_storage import DatabaseMetrics
from server.processor.config import ProcessorSettings
from server.processor.processor import Processor, ProcessorConfig
from server.processor.worker_metrics import WorkerCollector
from server.processor.workers import WorkerPool
from server.storage.postgres.database import Database, create_pool
from server.storage.postgres.listener import Listener
from server.storage.postgres.queue import QueueRepository
from server.webhooks.metrics import WebhookMetrics
from server.webhooks.runtime import WebhookRuntime


def processor_id() -> str:
    """Unique per processor: leases and attempt rows name it."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def processor_config(settings: ProcessorSettings) -> ProcessorConfig:
    return ProcessorConfig(
        concurrency=settings.processor_concurrency,
        lease=settings.task_lease,
        poll_interval=settings.processor_poll_interval,
        retry_backoff=settings.task_retry_backoff,
        retry_backoff_max=settings.task_retry_backoff_max,
        retention=settings.task_retention,
        max_pixels=settings.max_image_pixels,
        max_result_bytes=settings.max_result_bytes,
        stats_interval=settings.processor_stats_interval,
    )


class ProcessorRuntime:
    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        listener: Listener,
        metrics: TaskMetrics,
        db_metrics: DatabaseMetrics | None = None,
        webhook_metrics: WebhookMetrics | None = None,
    ) -> None:
        """``db_metrics`` times the processor's statements and shows its pool as
        ``processor``; ``webhook_metrics`` are its webhook dispatcher's (run unless
        TASKGATE_WEBHOOK_DISPATCHER is false)."""
        self.pool = create_pool(
            settings.database_url.get_secret_value(),
            min_size=1,
            max_size=settings.processor_pool_size,
            timeout=settings.db_timeout,
            reconnect_timeout=settings.db_reconnect_timeout,
            name="taskgate-processor",
            # No round trip to check each connection: a statement on a broken one
            # fails, and its task is retried once its lease expires.
            check_on_checkout=False,
            # Plan each statement once per connection. The processor's statements
            # are written for a generic plan (bench-claim-plan: the claims' generic
            # plans are as flat as their custom ones), and left to choose, Postgres
            # re-planned the fair claim on every execution: a third more of its CPU
            # per task (bench-fairness's drain).
            settings={"plan_cache_mode": "force_generic_plan"},
        )
        if db_metrics is not None:
            db_metrics.pools.add("processor", self.pool)
        self.database = Database(pool=self.pool, timeout=settings.db_timeout, metrics=db_metrics)
        self.queue = QueueRepository(
            database=self.database,
            owner=processor_id(),
            lease=settings.task_lease,
            fair=settings.queue_fairness,
            max_running=settings.user_max_running,
        )
        workers = WorkerPool(size=settings.processor_workers)
        metrics.registry.register(WorkerCollector(workers.pids))
        self.processor = Processor(
            queue=self.queue,
            pool=workers,
            listener=listener,
            metrics=metrics,
            config=processor_config(settings),
        )
        self.webhooks: WebhookRuntime | None = None
        if settings.webhook_dispatcher:
            self.webhooks = WebhookRuntime(
                settings,
                settings,
                listener=listener,
                metrics=webhook_metrics or WebhookMetrics(CollectorRegistry()),
                db_metrics=db_metrics,
            )

    async def start(self) -> None:
        await self.pool.open(wait=False)
        self.processor.start()
        if self.webhooks is not None:
            await self.webhooks.start()

    async def stop(self, grace: float) -> None:
        if self.webhooks is not None:
            await asyncio.gather(self.processor.stop(grace), self.webhooks.stop(grace))
        else:
            await self.processor.stop(grace)
        await self.database.close()
