"""Reading the outbox directly, as the event tests check it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

Db = psycopg.AsyncConnection[TupleRow]


async def events_of(db: Db, task_id: str) -> list[tuple[str, str]]:
    """The task's events as (type, the task's status in the payload), in id order."""
    cursor = await db.execute(
        "SELECT type, payload->>'status' FROM task_events WHERE task_id = %s ORDER BY id",
        (task_id,),
    )
    return [(str(kind), str(status)) for kind, status in await cursor.fetchall()]


async def inconsistencies(db: Db) -> list[tuple[object, ...]]:
    """Tasks whose outbox disagrees with their rows: the last event must show the task
    as it is now (status, attempts, error, end time), and every attempt must have its
    task.started event. Empty when the outbox is consistent."""
    cursor = await db.execute(
        """
        WITH last AS (
            SELECT DISTINCT ON (task_id) task_id, payload
            FROM task_events ORDER BY task_id, id DESC
        ), started AS (
            SELECT task_id, count(*) AS n FROM task_events
            WHERE type = 'task.started' GROUP BY task_id
        ), tried AS (
            SELECT task_id, count(*) AS n FROM task_attempts GROUP BY task_id
        )
        SELECT t.id, t.status, last.payload->>'status', t.attempts,
               coalesce(started.n, 0), coalesce(tried.n, 0)
        FROM tasks AS t
        LEFT JOIN last ON last.task_id = t.id
        LEFT JOIN started ON started.task_id = t.id
        LEFT JOIN tried ON tried.task_id = t.id
        WHERE last.payload IS NULL
           OR last.payload->>'status' <> t.status
           OR (last.payload->>'attempts')::int <> t.attempts
           OR last.payload->>'error' IS DISTINCT FROM t.error
           OR (last.payload->>'finished_at')::timestamptz IS DISTINCT FROM t.finished_at
           OR coalesce(started.n, 0) <> coalesce(tried.n, 0)
        """
    )
    return await cursor.fetchall()


@asynccontextmanager
async def events_refused(db: Db, event_type: str) -> AsyncIterator[None]:
    """Every insert of an event of ``event_type`` fails while inside the ``with``."""
    await db.execute(
        sql.SQL(
            "ALTER TABLE task_events ADD CONSTRAINT refused_for_the_test"
            " CHECK (type <> {}) NOT VALID"
        ).format(sql.Literal(event_type))
    )
    try:
        yield
    finally:
        await db.execute("ALTER TABLE task_events DROP CONSTRAINT refused_for_the_test")
