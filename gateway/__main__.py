"""``python -m gateway``: settings → channel → app → serve until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import sys

import grpc
from aiohttp import web

from gateway.app import create_app
from gateway.config import Settings
from gateway.memory import return_large_buffers
from gateway.metrics import HttpMetrics, metrics_app
from gateway.serving import start_site
from gateway.tls import site_tls, upstream_credentials, upstream_options
from taskgate_runtime import process
from taskgate_runtime.tls import TlsFileError

log = logging.getLogger("taskgate.gateway")


def channel_for(settings: Settings) -> grpc.aio.Channel:
    """The one channel to the server, over TLS when configured (TlsFileError: a bad file)."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        *upstream_options(settings),
    ]
    credentials = upstream_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(settings.upstream, options=options)
    return grpc.aio.secure_channel(settings.upstream, credentials, options=options)


async def serve(settings: Settings) -> bool:
    """Serves until SIGTERM or SIGINT; False when an address could not be bound."""
    stop = process.stop_requested()
    return_large_buffers()
    metrics = HttpMetrics()
    timeout = settings.header_timeout
    try:
        https = site_tls(settings)
        channel = channel_for(settings)
    except TlsFileError as exc:
        log.error("%s", exc)
        return False
    async with channel:
        runners: list[web.AppRunner] = []
        try:
            app = create_app(settings, channel, metrics=metrics)
            context = None if https is None else https.context
            runners.append(
                await start_site(app, settings.addr, header_timeout=timeout, ssl_context=context)
            )
            runners.append(
                await start_site(
                    metrics_app(metrics), settings.metrics_addr, header_timeout=timeout
                )
            )
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            for runner in runners:
                await runner.cleanup()
            return False
        log.info(
            "serving %s on %s for %s over %s (metrics on %s)",
            "HTTP" if https is None else "HTTPS",
            settings.addr,
            settings.upstream,
            "TLS" if settings.upstream_uses_tls else "plaintext",
            settings.metrics_addr,
        )
        process.started()
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
