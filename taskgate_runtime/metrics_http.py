"""Serving a registry on a metrics port, for the server, the standalone
processor and the gateway alike.

Each process builds its own :func:`process_registry` (never the global default
one): the process, platform and garbage-collector collectors are on it from
the start. :class:`MetricsServer` serves it on ``/metrics`` in the Prometheus
text format, or in OpenMetrics (with the histograms' exemplars: the trace ids
of sampled observations) when the scraper's ``Accept`` asks for
``application/openmetrics-text``; any other path is a plain 404. A port that is taken or an address
that is not this machine's fails start-up with :class:`MetricsListenError`.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from taskgate_runtime.settings import parse_addr

log = logging.getLogger(__name__)


class MetricsListenError(Exception):
    """The metrics address cannot be bound."""


def process_registry() -> CollectorRegistry:
    """A registry of the process's own, with process_*, python_info and python_gc_* on it."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """``GET /metrics``: the registry's exposition; anything else: aiohttp's plain 404."""

    async def serve(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encode(registry))
        response.headers["Content-Type"] = content_type
        return response

    app = web.Application()
    app.router.add_get("/metrics", serve)
    return app


class MetricsServer:
    """``registry`` served on ``addr`` (``host:port``; port 0 picks a free one)."""

    def __init__(self, registry: CollectorRegistry, addr: str) -> None:
        self._registry = registry
        self._addr = addr
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        """Binds and serves; returns the port. MetricsListenError when it cannot bind."""
        host, port = parse_addr(self._addr)
        runner = web.AppRunner(metrics_app(self._registry), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise MetricsListenError(
                f"cannot serve metrics on {self._addr}: {exc.strerror or exc} (the port is "
                "taken or the host is not an address of this machine)"
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])  # the one chosen for port 0
        log.info(
            "serving metrics on %s:%d/metrics",
            host,
            self.port,
            extra={"fields": {"metrics_addr": f"{host}:{self.port}"}},
        )
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
