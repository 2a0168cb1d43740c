"""No token reaches the log through grpc's own loggers, and a client cannot
amplify the log: metadata that is not valid UTF-8 was once
logged whole, with a traceback, at ERROR, three times per call."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from server.config import Settings
from tests.conftest import ROOT, TEST_REDIS_URL
from tests.integration.test_process import wait_serving
from tests.support.net import free_port
from tests.support.rawh2 import RawH2


@pytest.fixture
def logged_server(
    settings: Settings, redis_prefix: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {
        **os.environ,
        "TASKGATE_DATABASE_URL": settings.database_url.get_secret_value(),
        "TASKGATE_REDIS_URL": TEST_REDIS_URL,
        "TASKGATE_REDIS_KEY_PREFIX": redis_prefix,
        "TASKGATE_GRPC_ADDR": f"127.0.0.1:{port}",
        "TASKGATE_SERVER_METRICS_ADDR": "127.0.0.1:0",
        "TASKGATE_LOG_LEVEL": "info",
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "server"], cwd=ROOT, env=env, stderr=log_file
        )
    try:
        yield process, port, log_path
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def test_undecodable_metadata_leaves_no_token_and_one_short_line(
    logged_server: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    process, port, log_path = logged_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await wait_serving(health_pb2_grpc.HealthStub(channel))
    token = secrets.token_urlsafe(32).encode()
    for _ in range(3):
        client = await RawH2.connect(port)
        try:
            answer = await client.unary(
                "/taskgate.v1.UserService/GetUser",
                b"",
                [
                    (b"authorization", b"Bearer " + token + b"\xff"),
                    (b"x-junk", b"j" * 15_000 + b"\xfe"),
                ],
            )
        finally:
            await client.close()
        assert answer[b"grpc-status"] == b"16"  # UNAUTHENTICATED, as for any bad token
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0

    log = log_path.read_bytes()
    assert token not in log
    assert b"jjjjjjjjjj" not in log
    grpc_lines = [line for line in log.splitlines() if b'"grpc.' in line]
    assert len(grpc_lines) == 1, grpc_lines
    assert len(grpc_lines[0]) < 400
    assert b"Traceback" not in log
    assert len(log) < 5000  # three calls with 15 KB of junk each made 450 KB before
