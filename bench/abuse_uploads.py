"""The ``uploads`` round of ``make bench-abuse``: a flood of small uploads that declare
the most pixels allowed, from one authenticated user, against another user's
small submissions.

12 concurrent loops of CreateTask, each with the same ~116 KB PNG declaring
8000x5000 = 40 MP (``TASKGATE_MAX_IMAGE_PIXELS``), while a second user submits
a 64x64 PNG every 0.1 s. Reports the second user's latency and the server's
RSS (peak while the flood runs, and after it). The server runs without its
processor: what is measured is the request path. Aims: the other user's
CreateTask under 200 ms, RSS under 500 MB.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import statistics
import time
from collections import Counter

import grpc
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

FLOOD_LOOPS = 12
DECLARED = (8000, 5000)  # 40 MP, the default limit
LATENCY_AIM_S = 0.2
RSS_AIM_MB = 500
MAX_MESSAGE = 10 * 1024 * 1024 + 64 * 1024


def png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(out, "PNG", compress_level=9)
    return out.getvalue()


async def logged_in(channel: grpc.aio.Channel, address: str) -> tuple[tuple[str, str], ...]:
    """A new user's bearer metadata (each user registers from an address of its own)."""
    username, password = f"upload_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    forwarded = ("x-forwarded-for", address)
    await user_service_pb2_grpc.UserServiceStub(channel).CreateUser(
        user_service_pb2.CreateUserRequest(username=username, password=password),
        metadata=(forwarded,),
        timeout=30,
    )
    session = await session_service_pb2_grpc.SessionServiceStub(channel).CreateSession(
        session_service_pb2.CreateSessionRequest(username=username, password=password),
        metadata=(forwarded,),
        timeout=30,
    )
    return (("authorization", f"Bearer {session.session.session_id}"),)


def submission(image: bytes) -> task_service_pb2.CreateTaskRequest:
    thumbnail = task_service_pb2.Filter.Thumbnail(max_side=64)
    return task_service_pb2.CreateTaskRequest(
        image=image, filters=[task_service_pb2.Filter(thumbnail=thumbnail)]
    )


async def uploads(env: BenchEnv, duration: float) -> None:
    assert env.process is not None
    pid = env.process.pid
    flood_image, small_image = png(DECLARED), png((64, 64))
    print(
        f"\nuploads: {FLOOD_LOOPS} loops of CreateTask with a {len(flood_image) / 1024:.0f} KB "
        f"PNG declaring {DECLARED[0]}x{DECLARED[1]} = {DECLARED[0] * DECLARED[1] / 1e6:.0f} MP "
        f"(one user), another user's 64x64 CreateTask every 0.1 s, {duration:.0f} s"
    )
    options = [("grpc.max_send_message_length", MAX_MESSAGE)]
    async with (
        grpc.aio.insecure_channel(env.target, options=options) as flood_channel,
        grpc.aio.insecure_channel(env.target) as user_channel,
    ):
        attacker = await logged_in(flood_channel, "192.0.2.10")
        other = await logged_in(user_channel, "192.0.2.11")
        flood_stub = task_service_pb2_grpc.TaskServiceStub(flood_channel)
        user_stub = task_service_pb2_grpc.TaskServiceStub(user_channel)
        await user_stub.CreateTask(submission(small_image), metadata=other, timeout=30)  # warm
        print(f"  idle RSS: {rss_mb(pid):.0f} MB")
        stop = time.monotonic() + duration
        flood_codes: Counter[str] = Counter()

        async def flood() -> None:
            while time.monotonic() < stop:
                try:
                    await flood_stub.CreateTask(
                        submission(flood_image), metadata=attacker, timeout=60
                    )
                    flood_codes["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    flood_codes[error.code().name] += 1

        latencies: list[float] = []
        outcomes: Counter[str] = Counter()

        async def legitimate() -> None:
            await asyncio.sleep(0.5)  # the flood is under way
            while time.monotonic() < stop:
                started = time.monotonic()
                try:
                    await user_stub.CreateTask(submission(small_image), metadata=other, timeout=30)
                    outcomes["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    outcomes[error.code().name] += 1
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.1)

        async with PeakRss(pid) as rss:
            await asyncio.gather(legitimate(), *(flood() for _ in range(FLOOD_LOOPS)))
        await asyncio.sleep(2)
        after = rss_mb(pid)
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    worst = ordered[-1]
    latency_verdict = "MET" if worst < LATENCY_AIM_S else "NOT MET"
    rss_verdict = "MET" if rss.peak < RSS_AIM_MB else "NOT MET"
    print(
        f"  other user's CreateTask {dict(outcomes)}: median "
        f"{statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max "
        f"{worst * 1000:.0f} ms (aim < {LATENCY_AIM_S * 1000:.0f} ms: {latency_verdict})\n"
        f"  server RSS peak {rss.peak:.0f} MB (aim < {RSS_AIM_MB}: {rss_verdict}), "
        f"{after:.0f} MB 2 s after; flood calls {dict(flood_codes)}",
        flush=True,
    )
