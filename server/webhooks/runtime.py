"""A dispatcher with everything it owns: its own small Postgres pool (so
deliveries never starve tasks or API calls), its HTTP client, the dispatcher.

Every processor runs one (TASKGATE_WEBHOOK_DISPATCHER) on the process's
listener; ``python -m server.webhooks`` runs one alone.
"""

from __future__ import annotations

import os
import secrets
import socket

from server.metrics_storage import DatabaseMetrics
from server.storage.postgres.database import Database, create_pool
from server.storage.postgres.listener import Listener
from server.storage.postgres.webhooks import DeliveryQueue
from server.webhooks.config import WebhookTuning
from server.webhooks.dispatcher import Dispatcher
from server.webhooks.metrics import WebhookMetrics
from server.webhooks.sender import Sender
from taskgate_runtime.settings import DatabaseSettings

POOL_SIZE = 3  # the exchange, the rescuer, the pruner and stats


def dispatcher_id() -> str:
    """Unique per dispatcher: leases name it."""
    return f"webhooks:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class WebhookRuntime:
    def __init__(
        self,
        settings: WebhookTuning,
        database: DatabaseSettings,
        *,
        listener: Listener,
        metrics: WebhookMetrics,
        db_metrics: DatabaseMetrics | None = None,
    ) -> None:
        self.pool = create_pool(
            database.database_url.get_secret_value(),
            min_size=1,
            max_size=POOL_SIZE,
            timeout=database.db_timeout,
            reconnect_timeout=database.db_reconnect_timeout,
            name="taskgate-webhooks",
        )
        if db_metrics is not None:
            db_metrics.pools.add("webhooks", self.pool)
        self.database = Database(pool=self.pool, timeout=database.db_timeout, metrics=db_metrics)
        self.queue = DeliveryQueue(
            database=self.database,
            owner=dispatcher_id(),
            lease=settings.webhook_lease,
            max_attempts=settings.webhook_max_attempts,
            disable_after=settings.webhook_disable_after,
        )
        self.dispatcher = Dispatcher(
            queue=self.queue,
            sender=Sender(
                allow_http=settings.webhook_allow_http,
                allow_private=settings.webhook_allow_private,
                connect_timeout=settings.webhook_connect_timeout,
                timeout=settings.webhook_timeout,
                response_max_bytes=settings.webhook_response_max_bytes,
                connections=settings.webhook_concurrency,
            ),
            listener=listener,
            metrics=metrics,
            settings=settings,
        )

    async def start(self) -> None:
        await self.pool.open(wait=False)
        await self.dispatcher.start()

    async def stop(self, grace: float) -> None:
        await self.dispatcher.stop(grace)
        await self.database.close()
