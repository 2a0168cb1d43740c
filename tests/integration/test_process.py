"""``python -m server`` as an operator runs it: configured by the environment,
served until SIGTERM, then drained: health NOT_SERVING first, a clean exit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import Settings
from tests.conftest import ROOT, TEST_REDIS_URL
from tests.support.net import free_port


@pytest.fixture
def server_process(
    settings: Settings, redis_prefix: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {
        **os.environ,
        "TASKGATE_DATABASE_URL": settings.database_url.get_secret_value(),
        "TASKGATE_REDIS_URL": TEST_REDIS_URL,
        "TASKGATE_REDIS_KEY_PREFIX": redis_prefix,
        "TASKGATE_GRPC_ADDR": f"127.0.0.1:{port}",
        "TASKGATE_SERVER_METRICS_ADDR": "127.0.0.1:0",
        "TASKGATE_SHUTDOWN_GRACE": "2s",
        "TASKGATE_ARGON2_MEMORY_KIB": "1024",
        "TASKGATE_ARGON2_TIME_COST": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "server"], cwd=ROOT, env=env, stderr=subprocess.PIPE
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


async def wait_serving(stub: health_pb2_grpc.HealthStub) -> None:
    for _ in range(200):
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)
            continue
        if response.status == health_pb2.HealthCheckResponse.SERVING:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server never became SERVING")


async def test_sigterm_drains_and_exits_cleanly(
    server_process: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = server_process
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await wait_serving(stub)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="taskgate.v1.UserService"))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING

        process.send_signal(signal.SIGTERM)
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
    returncode = await asyncio.to_thread(process.wait, 10)
    assert returncode == 0
    assert process.stderr is not None
    log = process.stderr.read().decode()
    assert "Traceback" not in log
    assert '"message": "stopped"' in log


async def test_a_taken_port_is_a_clear_error(
    server_process: tuple[subprocess.Popen[bytes], int], settings: Settings
) -> None:
    _, port = server_process
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await wait_serving(health_pb2_grpc.HealthStub(channel))
    env = {
        **os.environ,
        "TASKGATE_DATABASE_URL": settings.database_url.get_secret_value(),
        "TASKGATE_GRPC_ADDR": f"127.0.0.1:{port}",
    }
    second = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}".encode() in second.stderr
    assert b"Traceback" not in second.stderr


def test_bad_configuration_fails_fast_with_the_variable_named() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env={**os.environ, "TASKGATE_SESSION_TTL": "forever"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"TASKGATE_SESSION_TTL" in result.stderr
    assert b"Traceback" not in result.stderr
