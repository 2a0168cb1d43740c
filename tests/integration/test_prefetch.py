"""The processor's prefetch: tasks claimed ahead behind light work wait in memory
for a slot; they are RUNNING in the database, so a cancel and a shutdown must
reach them too. The test holds the processor's only execution slot itself, so the
prefetched tasks cannot start until it lets go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import psycopg
import pytest
from psycopg.rows import TupleRow

from server.app import App
from server.config import Settings
from server.processor.processor import Processor
from tests.support.clients import Client, Tasks, grayscale, task_user
from tests.support.images import image_bytes
from tests.support.polling import eventually
from tests.support.task_rows import attempts_of

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def slot_held(settings: Settings) -> AsyncIterator[tuple[Processor, Tasks]]:
    """A server whose processor (concurrency 1, prefetch 1) cannot start a task
    until the caller releases its one slot (``processor._slots``)."""
    app = App(settings.model_copy(update={"processor_concurrency": 1}))
    assert app.processor is not None
    processor = app.processor.processor
    await processor._slots.acquire()
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield processor, await task_user(Client(channel))
    finally:
        await app.stop(grace=0.5)


async def statuses(db: psycopg.AsyncConnection[TupleRow], ids: list[str]) -> list[str]:
    cursor = await db.execute(
        "SELECT status FROM tasks WHERE id = ANY(%s::uuid[]) ORDER BY created_at", (ids,)
    )
    return [status for (status,) in await cursor.fetchall()]


async def shows(db: psycopg.AsyncConnection[TupleRow], ids: list[str], expected: list[str]) -> bool:
    return await statuses(db, ids) == expected


async def create_light(tasks: Tasks, count: int) -> list[str]:
    return [(await tasks.create(image_bytes(8, 8), [grayscale()])).task_id for _ in range(count)]


async def test_a_prefetched_task_cancelled_while_it_waits_never_runs(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    async with slot_held(settings) as (processor, tasks):
        ids = await create_light(tasks, 3)
        # One slot, one ahead: two claimed (RUNNING, leased), the third left to others.
        await eventually(lambda: shows(db, ids, ["running", "running", "pending"]))
        await asyncio.sleep(0.3)
        assert await statuses(db, ids) == ["running", "running", "pending"]
        await tasks.cancel(ids[0])
        await asyncio.sleep(0.3)  # the cancel notification reaches the processor
        processor._slots.release()
        await eventually(lambda: shows(db, ids, ["cancelled", "completed", "completed"]))
        cancelled = await tasks.get(ids[0])
        assert cancelled.error == "cancelled by its owner after 0 of 1 filters"
        assert cancelled.progress == 0
    assert await attempts_of(db, ids[0]) == [(1, "cancelled")]
    assert await attempts_of(db, ids[1]) == [(1, "completed")]


async def test_shutdown_hands_prefetched_tasks_back_at_once(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    async with slot_held(settings) as (processor, tasks):
        ids = await create_light(tasks, 2)
        await eventually(lambda: shows(db, ids, ["running", "running"]))
        async with asyncio.timeout(5):  # not the grace: nothing waited-for was executing
            await processor.stop(grace=30)
        assert await statuses(db, ids) == ["pending", "pending"]
    for task_id in ids:
        assert await attempts_of(db, task_id) == [(1, "released")]
