"""Short client deadlines are no server error: they once logged
ExecuteBatchError tracebacks and 'Task exception was never retrieved … PoolTimeout'."""

from __future__ import annotations

import asyncio
import gc
import logging
import random

import grpc
import pytest

from server.config import Settings
from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import user_service_pb2 as user_pb
from tests.support.clients import PASSWORD, new_username
from tests.support.servers import serving


async def test_calls_with_tiny_deadlines_log_no_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    crowded = serving(
        settings,
        db_pool_max_size=1,
        client_login_limit=10_000,
        client_register_limit=10_000,
        password_hash_queue=10_000,
    )
    codes: set[grpc.StatusCode] = set()
    async with crowded as (_, client):

        async def one(number: int) -> None:
            timeout = random.uniform(0.001, 0.05)
            try:
                if number % 2:
                    await client.users.CreateUser(
                        user_pb.CreateUserRequest(username=new_username(), password=PASSWORD),
                        timeout=timeout,
                    )
                else:
                    await client.sessions.CreateSession(
                        session_pb.CreateSessionRequest(username="nobody", password=PASSWORD),
                        timeout=timeout,
                    )
            except grpc.aio.AioRpcError as error:
                codes.add(error.code())

        with caplog.at_level(logging.INFO):
            for _ in range(5):
                await asyncio.gather(*(one(n) for n in range(200)))
            await asyncio.sleep(1.5)  # the statements given up on end meanwhile
            gc.collect()  # 'Task exception was never retrieved' is logged on collection
    assert codes <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAUTHENTICATED}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors[:3]]
