"""Events are pruned after the retention once their deliveries have finished; an
event still waiting for an enabled endpoint is kept, and counts in the lag."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.rows import TupleRow

from server.config import Settings
from server.storage.postgres.webhooks import DeliveryQueue
from tests.support.clients import grayscale, task_user
from tests.support.images import image_bytes
from tests.support.queue import queue_database
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(60)
Db = psycopg.AsyncConnection[TupleRow]


@pytest.fixture
async def deliveries(settings: Settings) -> AsyncIterator[DeliveryQueue]:
    async with queue_database(settings, size=2) as database:
        yield DeliveryQueue(
            database=database, owner="pruner", lease=5, max_attempts=3, disable_after=60
        )


async def event_ids(db: Db) -> list[int]:
    cursor = await db.execute("SELECT id FROM task_events ORDER BY id")
    return [row[0] for row in await cursor.fetchall()]


async def test_only_old_events_with_finished_deliveries_are_pruned(
    settings: Settings, db: Db, deliveries: DeliveryQueue
) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        tasks = await task_user(client)
        await tasks.create(image_bytes(8, 8), [grayscale()])  # no endpoint yet: no delivery
        await db.execute(
            "INSERT INTO webhook_endpoints (user_id, url, secret)"
            " SELECT user_id, 'https://example.com/', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'"
            " FROM tasks"
        )
        await tasks.create(image_bytes(8, 8), [grayscale()])  # delivered below
        await tasks.create(image_bytes(8, 8), [grayscale()])  # still waiting
    alone, delivered, waiting = await event_ids(db)
    await db.execute(
        "UPDATE webhook_deliveries SET status = 'delivered', finished_at = now()"
        " WHERE event_id = %s",
        (delivered,),
    )
    stats = await deliveries.stats()
    assert stats.oldest_undelivered_seconds >= 0
    assert stats.disabled_endpoints == 0

    assert await deliveries.prune_events(retention=3600) == 0  # none is old enough
    await db.execute("UPDATE task_events SET created_at = now() - interval '2 hours'")
    await db.execute("UPDATE webhook_deliveries SET created_at = now() - interval '2 hours'")
    assert (await deliveries.stats()).oldest_undelivered_seconds > 7000
    assert await deliveries.prune_events(retention=3600) == 2
    assert await event_ids(db) == [waiting]

    await db.execute("UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = 'gone'")
    assert (await deliveries.stats()).disabled_endpoints == 1
    assert (await deliveries.stats()).oldest_undelivered_seconds == 0
    assert await deliveries.prune_events(retention=3600) == 1  # its endpoint is disabled
    assert await event_ids(db) == []
    assert alone < delivered < waiting
