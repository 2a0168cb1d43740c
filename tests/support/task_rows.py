"""Reading the task tables directly, as the processor tests check them."""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

Db = psycopg.AsyncConnection[TupleRow]


async def attempts_of(db: Db, task_id: str) -> list[tuple[object, ...]]:
    """The task's attempt rows as (attempt, outcome), oldest first."""
    cursor = await db.execute(
        "SELECT attempt, outcome FROM task_attempts WHERE task_id = %s ORDER BY attempt",
        (task_id,),
    )
    return await cursor.fetchall()
