from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from server.errors import Unavailable
from server.health import NOT_SERVING, SERVING, DependencyMonitor


class Probe:
    def __init__(self) -> None:
        self.error: Exception | None = None

    async def __call__(self) -> None:
        if self.error is not None:
            raise self.error


async def status(health: health_aio.HealthServicer, service: str) -> int:
    response = await health.Check(health_pb2.HealthCheckRequest(service=service), None)
    return int(response.status)


@pytest.mark.parametrize("error", [Unavailable("down"), RuntimeError("probe bug")])
async def test_a_failing_probe_turns_its_services_not_serving(error: Exception) -> None:
    health = health_aio.HealthServicer()
    db, cache = Probe(), Probe()
    monitor = DependencyMonitor(
        health=health,
        probes={"db": db, "cache": cache},
        needs={"a": frozenset({"db"}), "b": frozenset({"cache"})},
        interval=1.0,
    )
    await monitor.check_once()
    assert [await status(health, s) for s in ("", "a", "b")] == [SERVING] * 3

    db.error = error
    await monitor.check_once()
    assert [await status(health, s) for s in ("", "a", "b")] == [NOT_SERVING, NOT_SERVING, SERVING]

    db.error = None
    await monitor.check_once()
    assert [await status(health, s) for s in ("", "a", "b")] == [SERVING] * 3
