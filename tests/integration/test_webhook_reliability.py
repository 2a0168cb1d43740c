"""At least once, in order, through crashes: a standalone dispatcher
(``python -m server.webhooks``) is SIGKILLed again and again while it delivers
500 events to a real aiohttp receiver that fails a random 20 % with 500s.

Afterwards every event has reached the receiver at least once, each task's
events were first accepted in event order (and nothing of a later event came
before an earlier one was accepted), and every duplicate carries the same
webhook-id and body. The counts are printed and asserted."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
from collections import defaultdict

import psycopg
import pytest
from psycopg.rows import TupleRow
from standardwebhooks.webhooks import Webhook

from server.config import Settings
from taskgate.v1 import webhook_service_pb2 as pb
from taskgate.v1 import webhook_service_pb2_grpc as pb_grpc
from tests.conftest import ROOT
from tests.support.clients import grayscale, task_user
from tests.support.images import image_bytes
from tests.support.receiver import Receiver, receiving
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(180)
TASKS = 250  # two events each (created, cancelled): 500 deliveries
KILLS = 6


def dispatcher(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TASKGATE_DATABASE_URL": settings.database_url.get_secret_value(),
        "TASKGATE_WEBHOOK_ALLOW_HTTP": "true",
        "TASKGATE_WEBHOOK_ALLOW_PRIVATE": "true",
        "TASKGATE_WEBHOOK_TIMEOUT": "1s",
        "TASKGATE_WEBHOOK_CONNECT_TIMEOUT": "0.5s",  # a lease of 3.5 s
        "TASKGATE_WEBHOOK_RETRY_BACKOFF": "50ms",
        "TASKGATE_WEBHOOK_RETRY_BACKOFF_MAX": "200ms",
        "TASKGATE_WEBHOOK_MAX_ATTEMPTS": "100",
        "TASKGATE_WEBHOOK_POLL_INTERVAL": "0.5s",
        "TASKGATE_WEBHOOK_METRICS_ADDR": "127.0.0.1:0",
        "TASKGATE_LOG_LEVEL": "error",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "server.webhooks"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )


async def kill_repeatedly(settings: Settings, receiver: Receiver, expected: int) -> int:
    """SIGKILLs dispatchers in the middle of their deliveries, then lets a last one
    deliver the rest and stop on SIGTERM; the kill count."""
    chance = random.Random(20261203)
    kills = 0
    while kills < KILLS and len(_firsts(receiver)) < expected:
        process = dispatcher(settings)
        await asyncio.sleep(chance.uniform(1.0, 2.0))  # start-up takes about a second
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
        kills += 1
    last = dispatcher(settings)
    try:
        async with asyncio.timeout(60):
            await receiver.wait_for(lambda r: len(_firsts(r)) >= expected, within=60)
    finally:
        last.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(last.wait, 15) == 0
    return kills


def _firsts(receiver: Receiver) -> dict[str, int]:
    """webhook-id → index of its first accepted request."""
    firsts: dict[str, int] = {}
    for index, request in enumerate(receiver.requests):
        if request.status == 200:
            firsts.setdefault(request.headers["webhook-id"], index)
    return firsts


async def test_sigkilled_dispatchers_deliver_every_event_at_least_once_in_order(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    fails = random.Random(7)
    async with (
        receiving(lambda _: 500 if fails.random() < 0.2 else 200, delay=0.02) as receiver,
        serving(settings, embedded_processor=False) as (_, client),
    ):
        tasks = await task_user(client)
        hooks = pb_grpc.WebhookServiceStub(client.channel)
        created = await hooks.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(endpoint=pb.WebhookEndpoint(url=receiver.url)),
            metadata=tasks.metadata,
        )

        async def one_task() -> None:
            task = await tasks.create(image_bytes(8, 8), [grayscale()])
            await tasks.cancel(task.task_id)

        for _ in range(TASKS // 25):
            await asyncio.gather(*(one_task() for _ in range(25)))
        kills = await kill_repeatedly(settings, receiver, 2 * TASKS)

    cursor = await db.execute("SELECT id, task_id FROM task_events ORDER BY id")
    events = await cursor.fetchall()
    assert len(events) == 2 * TASKS
    firsts = _firsts(receiver)
    assert set(firsts) == {f"evt_{event_id}" for event_id, _ in events}  # all, at least once

    by_task: dict[object, list[int]] = defaultdict(list)
    for event_id, task_id in events:
        by_task[task_id].append(event_id)
    for ids in by_task.values():
        accepted_at = [firsts[f"evt_{i}"] for i in ids]
        assert accepted_at == sorted(accepted_at)  # first accepted in event order
        for earlier, later in itertools.pairwise(ids):
            first_of_later = min(
                i
                for i, r in enumerate(receiver.requests)
                if r.headers["webhook-id"] == f"evt_{later}"
            )
            assert first_of_later > firsts[f"evt_{earlier}"]

    bodies: dict[str, set[bytes]] = defaultdict(set)
    for request in receiver.requests:
        Webhook(created.secret).verify(request.body, request.headers)
        bodies[request.headers["webhook-id"]].add(request.body)
    assert all(len(b) == 1 for b in bodies.values())  # a duplicate is the same message
    accepted = [r for r in receiver.requests if r.status == 200]
    duplicates = len(accepted) - len(firsts)
    failed = sum(1 for r in receiver.requests if r.status == 500)
    print(
        f"\n{len(events)} events, {len(receiver.requests)} requests: {failed} answered 500, "
        f"{duplicates} accepted duplicates, {kills} SIGKILLs"
    )
    assert failed > 0.1 * len(receiver.requests)
    assert kills == KILLS  # every one of them in the middle of the deliveries
