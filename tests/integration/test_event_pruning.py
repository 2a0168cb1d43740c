"""Events are pruned after the retention once their deliveries have finished; an
event still waiting for an enabled endpoint is kept, and counts in the lag."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

from server.config import Settings
from server.storage.postgres.queries import QUERIES
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


async def insert_events(db: Db, count: int, age: str) -> None:
    await db.execute(
        "INSERT INTO task_events (task_id, user_id, type, payload, created_at)"
        " SELECT gen_random_uuid(), gen_random_uuid(), 'task.created', '{}', now() - %s::interval"
        " FROM generate_series(1, %s)",
        (age, count),
    )


async def test_the_pruner_stops_at_the_first_young_event(db: Db, deliveries: DeliveryQueue) -> None:
    await insert_events(db, 3, "2 hours")
    await insert_events(db, 2000, "0 seconds")
    await insert_events(db, 2, "2 hours")  # committed late: past the first young one
    ids = await event_ids(db)
    young, late_old = ids[3], ids[-2:]

    # The walk reads the old events and the first young one, never the 2,000 young
    # ones: the cost of a round is what there is to prune, not what is kept.
    async with db.transaction(force_rollback=True):  # EXPLAIN ANALYZE deletes
        cursor = await db.execute(
            sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + QUERIES["prune_task_events"],
            {"retention": 3600, "limit": 500},
        )
        row = await cursor.fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    assert max(scan_rows(plan)) <= 4

    assert await deliveries.prune_events(retention=3600) == 3
    assert await event_ids(db) == ids[3:]  # the late old ones wait for the next round
    await db.execute("UPDATE task_events SET created_at = now() - interval '2 hours'")
    pruned = [await deliveries.prune_events(retention=3600) for _ in range(6)]
    assert pruned == [500, 500, 500, 500, 2, 0]  # 500 at a time
    assert await event_ids(db) == []
    assert ids[:3] < [young] < late_old  # in id order: old, young, ..., old


def scan_rows(node: dict[str, Any]) -> list[int]:
    """The rows each scan of task_events returned, all through the plan."""
    rows = [node["Actual Rows"]] if node.get("Relation Name") == "task_events" else []
    for child in node.get("Plans", []):
        rows += scan_rows(child)
    return rows
