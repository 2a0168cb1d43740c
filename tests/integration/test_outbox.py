"""The outbox: every task state change commits with its event, and only then.

Each path that changes a task's state is run twice: once while the database
refuses that path's event (the change must not commit either), and once
normally (the change and exactly its event commit). The paths: CreateTask,
CancelTask of a pending task, the claim, the batched fenced endings
(completed, failed, cancelled in one statement), a retry, the last retry, a
hand-back at shutdown, and the rescuer (back to pending, and failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import psycopg
import pytest
from psycopg.rows import TupleRow

from server.config import Settings
from server.models import TaskStatus
from server.storage.postgres.queue import Claimed, Ending, Output, QueueRepository
from taskgate.v1 import user_service_pb2 as user_pb
from tests.support.clients import Tasks, grayscale, task_user
from tests.support.images import image_bytes
from tests.support.outbox import events_of, events_refused, inconsistencies
from tests.support.queue import queue_database
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(60)
Db = psycopg.AsyncConnection[TupleRow]
DONE = Output(b"x", "image/png", 1, 1)


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[QueueRepository]:
    async with queue_database(settings, size=2) as database:
        yield QueueRepository(database=database, owner="outbox-test", lease=30)


async def status_of(db: Db, task_id: str) -> tuple[object, ...]:
    cursor = await db.execute("SELECT status, attempts FROM tasks WHERE id = %s", (task_id,))
    row = await cursor.fetchone()
    assert row is not None
    return row


async def claim_one(queue: QueueRepository) -> Claimed:
    (claimed,) = await queue.claim(1)
    return claimed


async def expire(db: Db, task_id: str, *, attempts: int | None = None) -> None:
    await db.execute(
        "UPDATE tasks SET lease_expires_at = now() - interval '1 second',"
        " attempts = coalesce(%(attempts)s, attempts), max_attempts = 3 WHERE id = %(id)s",
        {"id": task_id, "attempts": attempts},
    )
    await db.execute(
        "UPDATE task_attempts SET attempt = coalesce(%(attempts)s, attempt) WHERE task_id = %(id)s",
        {"id": task_id, "attempts": attempts},
    )


async def test_creating_and_cancelling_commit_only_with_their_events(
    settings: Settings, db: Db
) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        tasks = await task_user(client)
        async with events_refused(db, "task.created"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await tasks.create(image_bytes(8, 8), [grayscale()], idempotency_key="k")
        assert refused.value.code() == grpc.StatusCode.INTERNAL
        cursor = await db.execute("SELECT count(*) FROM tasks")
        assert await cursor.fetchone() == (0,)

        created = await tasks.create(image_bytes(8, 8), [grayscale()], idempotency_key="k")
        again = await tasks.create(image_bytes(8, 8), [grayscale()], idempotency_key="k")
        assert again.task_id == created.task_id
        assert await events_of(db, created.task_id) == [("task.created", "pending")]

        async with events_refused(db, "task.cancelled"):
            with pytest.raises(grpc.aio.AioRpcError):
                await tasks.cancel(created.task_id)
        assert await status_of(db, created.task_id) == ("pending", 0)
        await tasks.cancel(created.task_id)
        assert await events_of(db, created.task_id) == [
            ("task.created", "pending"),
            ("task.cancelled", "cancelled"),
        ]
    assert await inconsistencies(db) == []


async def pending(tasks: Tasks, count: int) -> list[str]:
    return [(await tasks.create(image_bytes(8, 8), [grayscale()])).task_id for _ in range(count)]


async def test_claims_and_batched_endings_commit_only_with_their_events(
    settings: Settings, db: Db, queue: QueueRepository
) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        tasks = await task_user(client)
        ids = await pending(tasks, 4)
    async with events_refused(db, "task.started"):
        with pytest.raises(psycopg.Error):
            await queue.claim(3)
    assert [await status_of(db, i) for i in ids] == [("pending", 0)] * 4
    claimed = await queue.claim(3)
    assert [str(c.job.task_id) for c in claimed] == ids[:3]

    endings = [
        Ending(claimed[0].job, TaskStatus.COMPLETED, output=DONE),
        Ending(claimed[1].job, TaskStatus.FAILED, "bad input"),
        Ending(claimed[2].job, TaskStatus.CANCELLED, "asked"),
    ]
    for refused in ("task.completed", "task.failed", "task.cancelled"):
        async with events_refused(db, refused):
            with pytest.raises(psycopg.Error):
                await queue.finish(endings, claim=1)  # the claim is undone with them
        assert [await status_of(db, i) for i in ids] == [("running", 1)] * 3 + [("pending", 0)]

    intruder = QueueRepository(database=queue._db, owner="intruder", lease=30)
    assert await intruder.finish(endings) == (set(), [])  # the fence: no change, no event
    ended, successors = await queue.finish(endings, claim=1)
    assert len(ended) == 3
    assert [str(s.job.task_id) for s in successors] == [ids[3]]
    expected = {
        ids[0]: ("task.completed", "completed"),
        ids[1]: ("task.failed", "failed"),
        ids[2]: ("task.cancelled", "cancelled"),
        ids[3]: ("task.started", "running"),
    }
    for task_id, last in expected.items():
        assert (await events_of(db, task_id))[1:] == (
            [last] if last[0] == "task.started" else [("task.started", "running"), last]
        )
    assert await queue.finish(endings) == (set(), [])  # ended once: no second event
    assert await inconsistencies(db) == []


async def test_retries_and_hand_backs_commit_only_with_their_events(
    settings: Settings, db: Db, queue: QueueRepository
) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        tasks = await task_user(client)
        (task_id,) = await pending(tasks, 1)
    await db.execute("UPDATE tasks SET max_attempts = 2 WHERE id = %s", (task_id,))

    first = await claim_one(queue)
    async with events_refused(db, "task.retried"):
        with pytest.raises(psycopg.Error):
            await queue.retry(first.job, "boom", delay=0)
        with pytest.raises(psycopg.Error):
            await queue.release(first.job)
    assert await status_of(db, task_id) == ("running", 1)
    assert await queue.release(first.job) is TaskStatus.PENDING

    second = await claim_one(queue)
    async with events_refused(db, "task.failed"):
        with pytest.raises(psycopg.Error):
            await queue.retry(second.job, "boom", delay=0)
    assert await status_of(db, task_id) == ("running", 2)
    assert await queue.retry(second.job, "boom", delay=0) is TaskStatus.FAILED
    assert await queue.retry(second.job, "boom", delay=0) is None  # fenced: no event

    assert await events_of(db, task_id) == [
        ("task.created", "pending"),
        ("task.started", "running"),
        ("task.retried", "pending"),
        ("task.started", "running"),
        ("task.failed", "failed"),
    ]
    assert await inconsistencies(db) == []


async def test_the_rescuer_commits_only_with_its_events(
    settings: Settings, db: Db, queue: QueueRepository
) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        tasks = await task_user(client)
        back, last = await pending(tasks, 2)
    await claim_one(queue)
    await claim_one(queue)
    await expire(db, back)
    await expire(db, last, attempts=3)
    for refused in ("task.retried", "task.failed"):
        async with events_refused(db, refused):
            with pytest.raises(psycopg.Error):
                await queue.rescue_expired(backoff=0, backoff_max=0)
        assert await status_of(db, back) == ("running", 1)
        assert await status_of(db, last) == ("running", 3)

    rescued = await queue.rescue_expired(backoff=0, backoff_max=0)
    assert {(str(r.task_id), r.status) for r in rescued} == {(back, "pending"), (last, "failed")}
    assert (await events_of(db, back))[-1] == ("task.retried", "pending")
    assert (await events_of(db, last))[-1] == ("task.failed", "failed")
    assert await queue.rescue_expired(backoff=0, backoff_max=0) == []
    assert await inconsistencies(db) == []


async def test_a_processed_task_leaves_one_event_per_change_in_order(
    settings: Settings, db: Db
) -> None:
    async with serving(settings) as (_, client):
        tasks = await task_user(client)
        created = await tasks.create(image_bytes(16, 16), [grayscale()])
        await tasks.wait_until_ended(created.task_id)
    assert await events_of(db, created.task_id) == [
        ("task.created", "pending"),
        ("task.started", "running"),
        ("task.completed", "completed"),
    ]
    assert await inconsistencies(db) == []


async def test_deleting_a_user_deletes_their_events(settings: Settings, db: Db) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        alice, bob = await task_user(client), await task_user(client)
        await alice.create(image_bytes(8, 8), [grayscale()])
        kept = await bob.create(image_bytes(8, 8), [grayscale()])
        await client.users.DeleteUser(
            user_pb.DeleteUserRequest(user_id="me"), metadata=alice.metadata
        )
    cursor = await db.execute("SELECT task_id::text FROM task_events")
    assert await cursor.fetchall() == [(kept.task_id,)]


async def test_one_users_concurrent_submissions_and_cancellations_never_deadlock(
    settings: Settings, db: Db
) -> None:
    """A submission locks its user's queue row and then takes the events lock; a
    cancellation, once, took the events lock and then waited for that queue row (the
    counting trigger runs at the end of its statement): a deadlock, which ended at the
    database timeout as UNAVAILABLE. Every event-writing statement now locks its queue
    rows first."""
    async with serving(settings, embedded_processor=False, db_timeout=2.0) as (_, client):
        tasks = await task_user(client)

        async def create_and_cancel() -> str:
            task = await tasks.create(image_bytes(8, 8), [grayscale()])
            await tasks.cancel(task.task_id)
            return task.task_id

        for _ in range(3):
            ids = await asyncio.gather(*(create_and_cancel() for _ in range(25)))
            for task_id in ids:
                assert [kind for kind, _ in await events_of(db, task_id)] == [
                    "task.created",
                    "task.cancelled",
                ]
    assert await inconsistencies(db) == []
