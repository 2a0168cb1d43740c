"""``python -m server``: settings → app → serve until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import sys

from server.app import App, ListenError
from server.config import Settings
from taskgate_runtime import process

log = logging.getLogger("server")


async def serve(settings: Settings) -> bool:
    """Serves until SIGTERM or SIGINT; False when the server could not start."""
    app = App(settings)
    stop = process.stop_requested()
    try:
        await app.start()
    except ListenError as exc:
        log.error("%s", exc)
        return False
    process.started()
    try:
        await stop.wait()
        log.info("shutting down: draining calls for up to %.0fs", settings.shutdown_grace)
    finally:
        await app.stop()
    return True


def main() -> int:
    return process.main(
        service="taskgate-server",
        load=Settings.from_env,
        serve=serve,
    )


if __name__ == "__main__":
    sys.exit(main())
