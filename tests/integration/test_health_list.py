"""grpc.health.v1 Health/List: public like Check and Watch, every service's status
(it once answered INTERNAL and needed a session)."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import App

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_list_needs_no_session_and_names_every_service(
    app: App, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    with caplog.at_level(logging.WARNING):
        response = await stub.List(health_pb2.HealthListRequest())
    statuses = {name: status.status for name, status in response.statuses.items()}
    assert statuses == {
        "": SERVING,
        "liveness": SERVING,
        "taskgate.v1.UserService": SERVING,
        "taskgate.v1.SessionService": SERVING,
        "taskgate.v1.TaskService": SERVING,
        "taskgate.v1.WebhookService": SERVING,
    }
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    for service, status in statuses.items():
        check = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert check.status == status

    await app.health.enter_graceful_shutdown()
    response = await stub.List(health_pb2.HealthListRequest())
    assert {s.status for s in response.statuses.values()} == {NOT_SERVING}
