"""``python -m server.processor``: a processor alone, to scale processing out.

It needs only Postgres. SIGTERM or SIGINT stops claiming; running tasks get
TASKGATE_SHUTDOWN_GRACE to finish, and the rest are handed back.
"""

from __future__ import annotations

import logging
import sys

from server.metrics import TaskMetrics
from server.metrics_storage import DatabaseMetrics
from server.processor.config import ProcessorSettings
from server.processor.runtime import ProcessorRuntime
from server.storage.postgres.listener import Listener
from server.webhooks.metrics import WebhookMetrics
from taskgate_runtime import process
from taskgate_runtime.metrics_http import MetricsListenError, MetricsServer, process_registry

log = logging.getLogger("server.processor")


async def run(settings: ProcessorSettings) -> bool:
    """Processes until SIGTERM or SIGINT; False when the metrics port cannot be bound."""
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
    runtime = ProcessorRuntime(
        settings,
        listener=listener,
        metrics=TaskMetrics(registry),
        db_metrics=DatabaseMetrics(registry),
        webhook_metrics=WebhookMetrics(registry),
    )
    stop = process.stop_requested()
    await runtime.start()
    listener.start()
    process.started()
    try:
        await stop.wait()
        log.info("shutting down: running tasks get up to %.0fs", settings.shutdown_grace)
    finally:
        await runtime.stop(settings.shutdown_grace)
        await listener.stop()
        await metrics.stop()
    return True


def main() -> int:
    return process.main(
        service="taskgate-processor",
        load=ProcessorSettings.from_env,
        serve=run,
    )


if __name__ == "__main__":
    sys.exit(main())
