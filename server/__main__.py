"""``python -m server``: settings → app → serve until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from server import logs
from server.app import App, ListenError
from server.config import ConfigError, Settings

log = logging.getLogger("server")


async def serve(settings: Settings) -> bool:
    """Serves until SIGTERM or SIGINT; False when the server could not start."""
    app = App(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await app.start()
    except ListenError as exc:
        log.error("%s", exc)
        return False
    try:
        await stop.wait()
        log.info("shutting down: draining calls for up to %.0fs", settings.shutdown_grace)
    finally:
        await app.stop()
    return True


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"taskgate: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(service="taskgate-server", level=settings.log_level, fmt=settings.log_format)
    return 0 if asyncio.run(serve(settings)) else 1


if __name__ == "__main__":
    sys.exit(main())
