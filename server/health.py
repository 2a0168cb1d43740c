"""grpc.health.v1 statuses that follow Postgres and Redis.

A monitor probes each dependency every few seconds; a service is SERVING only
while every dependency it needs answers. The overall status ("") needs all.
``liveness`` needs none: it answers SERVING for as long as the server's event
loop serves calls, so an orchestrator restarts a stuck server, not every server
during a database outage (readiness, on "", takes those out of rotation).
:class:`HealthServicer` adds ``List`` (every service's status) to grpc's own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from server.errors import Unavailable
from taskgate_runtime import telemetry

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]
LIVENESS = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health_aio.HealthServicer):  # type: ignore[misc]  # untyped package
    """grpc's servicer, with ``List``: the status of every service it knows."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: object
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in self._server_status.items()
            }
        )


class DependencyMonitor:
    def __init__(
        self,
        *,
        health: health_aio.HealthServicer,
        probes: Mapping[str, Probe],
        needs: Mapping[str, frozenset[str]],
        interval: float,
    ) -> None:
        """``needs`` maps each service name to the dependencies (probe names) it needs."""
        self._health = health
        self._probes = probes
        self._needs = {"": frozenset(probes), **needs}
        self._interval = interval
        self._statuses: dict[str, int] = {}
        self._up: dict[str, bool] = {}

    async def check_once(self) -> None:
        results = await asyncio.gather(*(self._probe(name) for name in self._probes))
        up = dict(zip(self._probes, results, strict=True))
        for name, is_up in up.items():
            if self._up.get(name) != is_up:
                log.log(
                    logging.INFO if is_up else logging.ERROR,
                    "%s is %s",
                    name,
                    "reachable" if is_up else "unreachable",
                    extra={"fields": {"dependency": name, "up": is_up}},
                )
        self._up = up
        for service, deps in self._needs.items():
            status = SERVING if all(up[d] for d in deps) else NOT_SERVING
            if self._statuses.get(service) != status:
                self._statuses[service] = status
                await self._health.set(service, status)

    async def run(self) -> None:
        with telemetry.quiet():  # a probe every few seconds is no trace worth keeping
            while True:
                await self.check_once()
                await asyncio.sleep(self._interval)

    async def _probe(self, name: str) -> bool:
        try:
            await self._probes[name]()
        except Unavailable:
            return False
        except Exception:  # a probe that breaks must not stop the monitor
            log.exception("probing %s failed", name)
            return False
        return True
