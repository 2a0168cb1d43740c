"""``python -m gateway``: settings → channel → app → serve until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import sys

import grpc
from aiohttp import web

from gateway.app import create_app
from gateway.config import Settings
from gateway.metrics import HttpMetrics, metrics_app
from taskgate_runtime import process
from taskgate_runtime.settings import parse_addr

log = logging.getLogger("taskgate.gateway")


def channel_for(settings: Settings) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        settings.upstream,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )


async def _site(app: web.Application, addr: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = parse_addr(addr)
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


async def serve(settings: Settings) -> bool:
    """Serves until SIGTERM or SIGINT; False when an address could not be bound."""
    stop = process.stop_requested()
    metrics = HttpMetrics()
    async with channel_for(settings) as channel:
        runners: list[web.AppRunner] = []
        try:
            runners.append(
                await _site(create_app(settings, channel, metrics=metrics), settings.addr)
            )
            runners.append(await _site(metrics_app(metrics), settings.metrics_addr))
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            for runner in runners:
                await runner.cleanup()
            return False
        log.info(
            "serving HTTP on %s for %s (metrics on %s)",
            settings.addr,
            settings.upstream,
            settings.metrics_addr,
        )
        await stop.wait()
        log.info("shutting down")
        for runner in reversed(runners):
            await runner.cleanup()
    return True


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main() -> int:
    _install_uvloop()
    return process.main(service="taskgate-gateway", load=Settings.from_env, serve=serve)


if __name__ == "__main__":
    sys.exit(main())
