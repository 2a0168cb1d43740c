"""The ``results`` round of ``make bench-abuse``: concurrent downloads of a result
larger than the largest gRPC message.

A task's result is set (straight in Postgres: the server runs without its
processor) to 14.5 MB of incompressible bytes, the size of the PNG of a 3.2 MB
noise image; then 8 concurrent GetTaskResult calls download it, three times.
Reports the calls' outcomes (each download checked byte for byte), their time,
and the server's RSS (peak, and 2 s after). Aim: every download whole, RSS
under 500 MB.
"""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import time
from collections import Counter

import grpc
import psycopg
from PIL import Image

from bench.abuse import PeakRss, rss_mb
from bench.infra import BenchEnv
from taskgate.v1 import (
    session_service_pb2,
    session_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)

RESULT_BYTES = 14_500_000
DOWNLOADS = 8
ROUNDS = 3
RSS_AIM_MB = 500


async def owner_with_task(channel: grpc.aio.Channel) -> tuple[tuple[tuple[str, str], ...], str]:
    username, password = f"results_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    await user_service_pb2_grpc.UserServiceStub(channel).CreateUser(
        user_service_pb2.CreateUserRequest(username=username, password=password), timeout=30
    )
    session = await session_service_pb2_grpc.SessionServiceStub(channel).CreateSession(
        session_service_pb2.CreateSessionRequest(username=username, password=password),
        timeout=30,
    )
    metadata = (("authorization", f"Bearer {session.session.session_id}"),)
    image = io.BytesIO()
    Image.new("L", (8, 8)).save(image, "PNG")
    created = await task_service_pb2_grpc.TaskServiceStub(channel).CreateTask(
        task_service_pb2.CreateTaskRequest(
            image=image.getvalue(),
            filters=[task_service_pb2.Filter(grayscale=task_service_pb2.Filter.Grayscale())],
        ),
        metadata=metadata,
        timeout=30,
    )
    return metadata, created.task.task_id


async def complete_with(database_url: str, task_id: str, result: bytes) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            """UPDATE tasks SET status = 'completed', progress = 1, result_image = %(data)s,
                      result_content_type = 'image/png', result_width = 2000,
                      result_height = 1800, result_size_bytes = length(%(data)s),
                      finished_at = now(), updated_at = now()
               WHERE id = %(id)s""",
            {"id": task_id, "data": result},
        )


async def results(env: BenchEnv) -> None:
    assert env.process is not None
    pid = env.process.pid
    result = os.urandom(RESULT_BYTES)
    print(
        f"\nresults: {DOWNLOADS} concurrent GetTaskResult of a {RESULT_BYTES / 1e6:.1f} MB "
        f"result (the largest message is 10.5 MB), {ROUNDS} rounds"
    )
    async with grpc.aio.insecure_channel(env.target) as channel:
        metadata, task_id = await owner_with_task(channel)
        await complete_with(env.database_url, task_id, result)
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        print(f"  idle RSS: {rss_mb(pid):.0f} MB")
        outcomes: Counter[str] = Counter()

        async def download() -> None:
            request = task_service_pb2.GetTaskResultRequest(task_id=task_id)
            try:
                chunks = [c.data async for c in stub.GetTaskResult(request, metadata=metadata)]
            except grpc.aio.AioRpcError as error:
                outcomes[error.code().name] += 1
                return
            outcomes["OK, whole" if b"".join(chunks) == result else "OK, WRONG BYTES"] += 1

        started = time.monotonic()
        async with PeakRss(pid) as rss:
            for _ in range(ROUNDS):
                await asyncio.gather(*(download() for _ in range(DOWNLOADS)))
        took = time.monotonic() - started
        await asyncio.sleep(2)
        after = rss_mb(pid)
    verdict = "MET" if rss.peak < RSS_AIM_MB and set(outcomes) == {"OK, whole"} else "NOT MET"
    print(
        f"  downloads {dict(outcomes)} in {took:.1f} s "
        f"({DOWNLOADS * ROUNDS * RESULT_BYTES / took / 1e6:.0f} MB/s); server RSS peak "
        f"{rss.peak:.0f} MB, {after:.0f} MB 2 s after (aim: all whole, < {RSS_AIM_MB}: "
        f"{verdict})",
        flush=True,
    )
