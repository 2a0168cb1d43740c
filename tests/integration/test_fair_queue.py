"""The fair queue against real Postgres, driven claim by claim (no processor):
turns across users, FIFO and priority within a user, the per-user pending and
running limits, two processors at once, a user deleted with queued tasks, a
rescued task's place, and the position estimate."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from uuid import UUID

import pytest

from server.config import Settings
from server.models import Job
from tests.support.queue import Queue, count_mismatches, queue_database
from tests.support.task_rows import Db

pytestmark = pytest.mark.timeout(60)


def users_of(jobs: list[Job]) -> list[UUID | None]:
    return [job.user_id for job in jobs]


async def set_limits(
    db: Db, user: UUID, *, pending: int | None = None, running: int | None = None
) -> None:
    """The documented admin path: a row of user_limits."""
    await db.execute(
        "INSERT INTO user_limits (user_id, max_pending, max_running) VALUES (%s, %s, %s) "
        "ON CONFLICT (user_id) DO UPDATE SET max_pending = EXCLUDED.max_pending, "
        "max_running = EXCLUDED.max_running, updated_at = now()",
        (user, pending, running),
    )


async def test_users_take_turns_and_each_users_tasks_run_oldest_first(
    settings: Settings, db: Db
) -> None:
    async with queue_database(settings) as database:
        queue = Queue(database)
        a, b, c = [await queue.user() for _ in range(3)]
        a_tasks = [await queue.task(a) for _ in range(4)]
        b_tasks = [await queue.task(b) for _ in range(2)]
        await queue.task(c)
        jobs = await queue.drain()
    users = users_of(jobs)
    assert set(users[:3]) == {a, b, c}  # everyone's first before anyone's second
    assert set(users[3:5]) == {a, b}
    assert users[5:] == [a, a]
    assert [j.task_id for j in jobs if j.user_id == a] == a_tasks
    assert [j.task_id for j in jobs if j.user_id == b] == b_tasks
    assert await count_mismatches(db) == 0


async def test_one_batch_interleaves_the_users(settings: Settings, db: Db) -> None:
    async with queue_database(settings) as database:
        queue = Queue(database)
        a, b = await queue.user(), await queue.user()
        a_tasks = [await queue.task(a) for _ in range(5)]
        b_tasks = [await queue.task(b) for _ in range(5)]
        batch = [claimed.job for claimed in await queue.claim(4)]
    first = batch[0].user_id
    assert users_of(batch) == [first, b if first == a else a] * 2
    assert {j.task_id for j in batch} == {*a_tasks[:2], *b_tasks[:2]}
    assert await count_mismatches(db) == 0


async def test_a_newcomer_waits_for_at_most_one_task_per_busy_user(settings: Settings) -> None:
    async with queue_database(settings) as database:
        queue = Queue(database)
        a, b, newcomer = [await queue.user() for _ in range(3)]
        for _ in range(20):
            await queue.task(a)
            await queue.task(b)
        for _ in range(6):  # the backlog is being worked on
            await queue.complete(await queue.claim(1))
        first = await queue.task(newcomer)
        (claimed,) = await queue.claim(1)
        assert claimed.job.task_id == first  # never served: its turn is the oldest
        assert claimed.job.overtaken == 0
        await queue.complete([claimed])
        second = await queue.task(newcomer)  # just served: behind one task of each busy user
        jobs = [c.job for c in await queue.claim(1) + await queue.claim(1) + await queue.claim(1)]
    assert jobs[-1].task_id == second
    assert set(users_of(jobs[:2])) == {a, b}
    assert jobs[-1].overtaken == 2


async def test_priority_orders_only_the_users_own_tasks(settings: Settings) -> None:
    async with queue_database(settings) as database:
        queue = Queue(database)
        a, b = await queue.user(), await queue.user()
        low = await queue.task(a, priority=-3)
        usual = await queue.task(a)
        high = await queue.task(a, priority=10)
        other = await queue.task(b, priority=-10)
        jobs = await queue.drain()
    ids = [job.task_id for job in jobs]
    assert [i for i in ids if i != other] == [high, usual, low]
    assert ids.index(other) <= 1  # b's lowest priority still gets b's turn


async def test_a_user_at_the_running_limit_waits_and_others_go_on(
    settings: Settings, db: Db
) -> None:
    async with queue_database(settings) as database:
        queue = Queue(database, max_running=1)
        a, b, unlimited = [await queue.user() for _ in range(3)]
        for user in (a, a, a, b, b, unlimited, unlimited, unlimited):
            await queue.task(user)
        await set_limits(db, unlimited, running=0)  # 0: no limit for this user
        claimed = await queue.claim(10)
        assert Counter(users_of([c.job for c in claimed])) == {a: 1, b: 1, unlimited: 3}
        assert await queue.claim(10) == []  # a and b at their limit: their excess waits
        await set_limits(db, a, running=2)  # raised while a's task runs
        (more,) = await queue.claim(10)
        assert more.job.user_id == a
        assert await queue.claim(10) == []
        a_jobs = [c for c in [*claimed, more] if c.job.user_id == a]
        await queue.complete(a_jobs)
        assert users_of([c.job for c in await queue.claim(10)]) == [a]  # its last one
    assert await count_mismatches(db) == 0


async def test_the_pending_limit_at_the_edge_and_past_it(settings: Settings, db: Db) -> None:
    async with queue_database(settings, size=8) as database:
        queue = Queue(database)
        user, other = await queue.user(), await queue.user()
        first = await queue.submit(user, max_pending=2)
        edge = await queue.submit(user, max_pending=2)
        past = await queue.submit(user, max_pending=2)
        assert first.task is not None
        assert edge.task is not None
        assert (past.task, past.queued, past.max_pending, past.full) == (None, 2, 2, True)
        assert (await queue.submit(other, max_pending=2)).task is not None  # per user
        await queue.complete(await queue.claim(2))  # one of each starts: room for one
        assert (await queue.submit(user, max_pending=2)).task is not None
        assert (await queue.submit(user, max_pending=2)).task is None
        await set_limits(db, user, pending=3)  # the override wins over the setting
        assert (await queue.submit(user, max_pending=2)).task is not None
        assert (await queue.submit(user, max_pending=2)).full
        await set_limits(db, user, pending=0)  # 0: no limit
        assert (await queue.submit(user, max_pending=2)).task is not None
        # At once, at the edge: the user's queue row is locked, so exactly the room is used.
        racer = await queue.user()
        racing = await asyncio.gather(*(queue.submit(racer, max_pending=3) for _ in range(8)))
    assert sum(r.task is not None for r in racing) == 3
    assert await count_mismatches(db) == 0


async def test_two_processors_claim_every_task_exactly_once(settings: Settings, db: Db) -> None:
    async with queue_database(settings, size=8) as database:
        setup = Queue(database)
        users = [await setup.user() for _ in range(4)]
        for number in range(120):
            await setup.task(users[number % 4])
        processors = [Queue(database, owner=f"p{n}") for n in range(2)]
        seen: list[UUID] = []

        async def work(queue: Queue, rng: random.Random) -> None:
            while claimed := await queue.claim(rng.randint(1, 5)):
                seen.extend(c.job.task_id for c in claimed)
                assert await queue.complete(claimed) == {c.job.task_id for c in claimed}

        await asyncio.gather(*(work(q, random.Random(n)) for n, q in enumerate(processors)))
    assert len(seen) == len(set(seen)) == 120
    cursor = await db.execute(
        "SELECT count(*) FILTER (WHERE status = 'completed' AND attempts = 1), "
        "(SELECT count(*) FROM task_attempts) FROM tasks"
    )
    assert await cursor.fetchone() == (120, 120)
    assert await count_mismatches(db) == 0


async def test_the_running_limit_holds_across_processors(settings: Settings, db: Db) -> None:
    async with queue_database(settings, size=8) as database:
        setup = Queue(database)
        users = [await setup.user() for _ in range(3)]
        for number in range(30):
            await setup.task(users[number % 3])
        processors = [Queue(database, owner=f"p{n}", max_running=2) for n in range(3)]
        for _ in range(3):  # every processor claims at once, and again
            await asyncio.gather(*(q.claim(4) for q in processors))
    cursor = await db.execute(
        "SELECT user_id, count(*) FROM tasks WHERE status = 'running' GROUP BY user_id"
    )
    assert dict(await cursor.fetchall()) == dict.fromkeys(users, 2)
    assert await count_mismatches(db) == 0


async def test_a_user_deleted_with_queued_tasks_leaves_the_others_alone(
    settings: Settings, db: Db
) -> None:
    async with queue_database(settings) as database:
        queue = Queue(database)
        gone, staying = await queue.user(), await queue.user()
        for _ in range(5):
            await queue.task(gone)
        staying_tasks = [await queue.task(staying) for _ in range(2)]
        running = await queue.claim(2)  # one of each
        assert await queue.users.delete(gone)
        ended = await queue.complete(running)  # the gone user's task ends nothing
        assert ended == {c.job.task_id for c in running if c.job.user_id == staying}
        rest = await queue.drain()
    assert [job.task_id for job in rest] == [
        t for t in staying_tasks if t not in {c.job.task_id for c in running}
    ]
    cursor = await db.execute("SELECT count(*) FROM user_queues WHERE user_id = %s", (gone,))
    assert await cursor.fetchone() == (0,)
    assert await count_mismatches(db) == 0


async def expire(db: Db, task_id: UUID) -> None:
    """Its processor died: the lease ran out."""
    await db.execute(
        "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (task_id,),
    )


@pytest.mark.parametrize("fair", [True, False], ids=["fair", "fifo"])
async def test_a_rescued_task_keeps_its_place_ahead_of_newer_tasks(
    settings: Settings, db: Db, fair: bool
) -> None:
    async with queue_database(settings) as database:
        queue = Queue(database, fair=fair)
        user, other = await queue.user(), await queue.user()
        rescued = await queue.task(user)
        (claimed,) = await queue.claim(1)
        assert claimed.job.task_id == rescued
        newer = [await queue.task(user), await queue.task(other), await queue.task(user)]
        await expire(db, rescued)
        (back,) = await queue.queue.rescue_expired(backoff=0.0, backoff_max=0.0)
        assert (back.task_id, back.status) == (rescued, "pending")
        jobs = await queue.drain()
    ids = [job.task_id for job in jobs]
    # Oldest first: ahead of everything newer. Fair: first of its user's tasks, behind
    # at most one task of each other busy user.
    assert ids.index(rescued) <= (1 if fair else 0)
    assert [j.task_id for j in jobs if j.user_id == user] == [rescued, newer[0], newer[2]]
    (again,) = [job for job in jobs if job.task_id == rescued]
    assert again.attempt == 2
    assert again.overtaken is None  # observed for first attempts only
    assert await count_mismatches(db) == 0


async def position(queue: Queue, user: UUID, task_id: UUID) -> int | None:
    task = await queue.tasks.get_positioned(user, task_id)
    assert task is not None
    return task.queue_position


async def test_the_position_is_how_many_start_before_it(settings: Settings) -> None:
    async with queue_database(settings) as database:
        queue = Queue(database)
        a, b, c = [await queue.user() for _ in range(3)]
        mine = [await queue.task(a) for _ in range(3)]
        for _ in range(4):
            await queue.task(b)
        await queue.task(c)
        urgent = await queue.task(c, priority=5)
        positions = {t: await position(queue, a, t) for t in mine}
        positions[urgent] = await position(queue, c, urgent)
        assert await queue.tasks.get_positioned(b, mine[0]) is None  # another user's: none
        order = [job.task_id for job in await queue.drain()]
        assert await position(queue, a, mine[0]) is None  # not pending any more
    assert positions == {t: order.index(t) for t in positions}
