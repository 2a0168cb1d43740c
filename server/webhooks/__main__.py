"""``python -m server.webhooks``: a webhook dispatcher alone, to scale deliveries
out (set TASKGATE_WEBHOOK_DISPATCHER=false on the processors then, or keep both).

It needs only Postgres. SIGTERM or SIGINT stops claiming; POSTs in flight get
TASKGATE_SHUTDOWN_GRACE to finish.
"""

from __future__ import annotations

import logging
import sys

from server.metrics_storage import DatabaseMetrics
from server.storage.postgres.listener import Listener
from server.webhooks.config import WebhookSettings
from server.webhooks.metrics import WebhookMetrics
from server.webhooks.runtime import WebhookRuntime
from taskgate_runtime import process
from taskgate_runtime.metrics_http import MetricsListenError, MetricsServer, process_registry

log = logging.getLogger("server.webhooks")


async def run(settings: WebhookSettings) -> bool:
    """Delivers until SIGTERM or SIGINT; False when the metrics port cannot be bound."""
    registry = process_registry()
    metrics = MetricsServer(registry, settings.metrics_addr)
    try:
        await metrics.start()
    except MetricsListenError as exc:
        log.error("%s", exc)
        return False
    listener = Listener(
        conninfo=settings.database_url.get_secret_value(), connect_timeout=settings.db_timeout
    )
    runtime = WebhookRuntime(
        settings,
        settings,
        listener=listener,
        metrics=WebhookMetrics(registry),
        db_metrics=DatabaseMetrics(registry),
    )
    stop = process.stop_requested()
    await runtime.start()
    listener.start()
    log.info("webhook dispatcher %s started", runtime.queue.owner)
    process.started()
    try:
        await stop.wait()
    finally:
        await runtime.stop(settings.shutdown_grace)
        await listener.stop()
        await metrics.stop()
    return True


def main() -> int:
    return process.main(service="taskgate-webhooks", load=WebhookSettings.from_env, serve=run)


if __name__ == "__main__":
    sys.exit(main())
