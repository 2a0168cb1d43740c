"""The queue's repositories on the test database, for tests that drive claims
themselves (no processor): users, tasks submitted as CreateTask stores them,
claims and endings."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import UUID

from server.config import Settings
from server.imaging.filters import FilterStep
from server.models import ImageMeta, Job, NewTask, TaskStatus
from server.storage.postgres.database import Database, create_pool
from server.storage.postgres.queue import Claimed, Ending, Output, QueueRepository
from server.storage.postgres.tasks import Inserted, TaskRepository
from server.storage.postgres.users import UserRepository
from tests.support.task_rows import Db

DONE = Output(b"x", "image/png", 1, 1)


@asynccontextmanager
async def queue_database(settings: Settings, size: int = 4) -> AsyncIterator[Database]:
    pool = create_pool(
        settings.database_url.get_secret_value(),
        min_size=1,
        max_size=size,
        timeout=5,
        reconnect_timeout=2,
    )
    await pool.open()
    database = Database(pool=pool, timeout=5)
    try:
        yield database
    finally:
        await database.close()


@dataclass
class Queue:
    """Users and their tasks, and claims as one processor makes them."""

    database: Database
    fair: bool = True
    max_running: int = 0
    owner: str = "test-processor"

    def __post_init__(self) -> None:
        self.users = UserRepository(database=self.database)
        self.tasks = TaskRepository(database=self.database, fair=self.fair)
        self.queue = QueueRepository(
            database=self.database,
            owner=self.owner,
            lease=30,
            fair=self.fair,
            max_running=self.max_running,
        )

    async def user(self) -> UUID:
        return (await self.users.insert(f"q{secrets.token_hex(6)}", "not-a-hash")).id

    async def submit(self, user: UUID, *, priority: int = 0, max_pending: int = 0) -> Inserted:
        new = NewTask(
            user_id=user,
            filters=(FilterStep("grayscale", {}),),
            output_format="png",
            image=b"not decoded by these tests",
            input=ImageMeta("image/png", 8, 8, 26),
            idempotency_key=None,
            request_hash=b"",
            request_id=None,
            max_attempts=3,
            priority=priority,
        )
        inserted = await self.tasks.insert(new, max_pending=max_pending)
        assert inserted is not None
        return inserted

    async def task(self, user: UUID, *, priority: int = 0) -> UUID:
        inserted = await self.submit(user, priority=priority)
        assert inserted.task is not None
        return inserted.task.id

    async def claim(self, limit: int = 1) -> list[Claimed]:
        return await self.queue.claim(limit)

    async def complete(self, claimed: list[Claimed]) -> set[UUID]:
        endings = [Ending(c.job, TaskStatus.COMPLETED, output=DONE) for c in claimed]
        ended, _ = await self.queue.finish(endings)
        return ended

    async def drain(self, batch: int = 1) -> list[Job]:
        """Claims (and completes) ``batch`` tasks at a time until none is due: the jobs,
        in the order they were claimed."""
        jobs: list[Job] = []
        while claimed := await self.claim(batch):
            jobs += [c.job for c in claimed]
            await self.complete(claimed)
        return jobs


COUNT_MISMATCHES = """
    SELECT count(*) FROM user_queues AS q
    LEFT JOIN (SELECT user_id, count(*) FILTER (WHERE status = 'pending') AS pending,
                      count(*) FILTER (WHERE status = 'running') AS running
               FROM tasks GROUP BY user_id) AS t ON t.user_id = q.user_id
    WHERE q.pending <> coalesce(t.pending, 0) OR q.running <> coalesce(t.running, 0)
"""


async def count_mismatches(db: Db) -> int:
    """Users whose pending or running count (user_queues) is not their tasks'."""
    cursor = await db.execute(COUNT_MISMATCHES)
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
