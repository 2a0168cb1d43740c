"""The delivery queue's claims at their limits: the batch size, the running
deliveries per endpoint, one open delivery per task and endpoint, the fence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.rows import TupleRow

from server.config import Settings
from server.storage.postgres.database import Database
from server.storage.postgres.webhooks import Delivery, DeliveryQueue, Result
from tests.support.clients import grayscale, task_user
from tests.support.images import image_bytes
from tests.support.queue import queue_database
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(60)
Db = psycopg.AsyncConnection[TupleRow]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    async with queue_database(settings, size=2) as database:
        yield database


def queue(database: Database, owner: str = "claims") -> DeliveryQueue:
    return DeliveryQueue(
        database=database, owner=owner, lease=30, max_attempts=3, disable_after=3600
    )


def ok(delivery: Delivery) -> Result:
    return Result(delivery, datetime.now(UTC), 0.001, 200, None, 0.0)


async def endpoints_and_tasks(settings: Settings, db: Db, *, endpoints: int, tasks: int) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        user = await task_user(client)
        for number in range(endpoints):
            await db.execute(
                "INSERT INTO webhook_endpoints (user_id, url, secret) SELECT id, %s, %s FROM users",
                (f"https://example.com/{number}", SECRET),
            )
        for _ in range(tasks):
            await user.create(image_bytes(8, 8), [grayscale()])


async def test_claims_stop_at_the_batch_and_at_the_endpoints_running_limit(
    settings: Settings, db: Db, database: Database
) -> None:
    await endpoints_and_tasks(settings, db, endpoints=2, tasks=5)  # 10 deliveries
    one = queue(database)
    _, first = await one.exchange([], claim=3, per_endpoint=2)
    assert len(first) == 3  # the batch
    _, second = await one.exchange([], claim=10, per_endpoint=2)
    assert len(second) == 1  # two running per endpoint at most
    claimed = first + second
    assert sorted(str(d.endpoint_id) for d in claimed).count(str(claimed[0].endpoint_id)) == 2
    other = queue(database, "another dispatcher")
    assert await other.exchange([], claim=10, per_endpoint=2) == (set(), [])  # counted for all
    assert all(d.secrets == (SECRET,) for d in claimed)

    assert await other.exchange([ok(claimed[0])], claim=0, per_endpoint=2) == (set(), [])  # fence
    ended, successor = await one.exchange([ok(claimed[0])], claim=10, per_endpoint=2)
    assert ended == {claimed[0].id}
    assert len(successor) == 1
    assert successor[0].endpoint_id == claimed[0].endpoint_id


async def test_a_tasks_next_event_waits_for_the_one_before(
    settings: Settings, db: Db, database: Database
) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        user = await task_user(client)
        await db.execute(
            "INSERT INTO webhook_endpoints (user_id, url, secret) SELECT id, %s, %s FROM users",
            ("https://example.com/", SECRET),
        )
        created = await user.create(image_bytes(8, 8), [grayscale()])
        await user.cancel(created.task_id)  # two events of one task
    one = queue(database)
    _, (first,) = await one.exchange([], claim=10, per_endpoint=10)
    assert first.event.type.value == "task.created"
    assert await one.exchange([], claim=10, per_endpoint=10) == (set(), [])
    _, (second,) = await one.exchange([ok(first)], claim=10, per_endpoint=10)
    assert second.event.type.value == "task.cancelled"
    assert second.event.task.status.value == "cancelled"
