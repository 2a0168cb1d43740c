"""``python -m server.processor``: a processor alone, to scale processing out.

It needs only Postgres. SIGTERM or SIGINT stops claiming; running tasks get
TASKGATE_SHUTDOWN_GRACE to finish, and the rest are handed back.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from prometheus_client import CollectorRegistry

from server import logs
from server.config import ConfigError, Settings
from server.metrics import TaskMetrics
from server.processor.runtime import ProcessorRuntime
from server.storage.postgres.listener import Listener

log = logging.getLogger("server.processor")


async def run(settings: Settings) -> None:
    listener = Listener(
        conninfo=settings.database_url.reveal(), connect_timeout=settings.db_timeout
    )
    runtime = ProcessorRuntime(
        settings, listener=listener, metrics=TaskMetrics(CollectorRegistry())
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runtime.start()
    listener.start()
    try:
        await stop.wait()
        log.info("shutting down: running tasks get up to %.0fs", settings.shutdown_grace)
    finally:
        await runtime.stop(settings.shutdown_grace)
        await listener.stop()


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"taskgate: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(service="taskgate-processor", level=settings.log_level, fmt=settings.log_format)
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
