"""The processor against real Postgres: rescue, retries, fencing, failures,
hand-back at shutdown, pruning, and the standalone process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from server.config import Settings
from server.imaging.filters import FilterStep
from server.models import TaskStatus
from server.processor.workers import (
    Done,
    Failed,
    JobControl,
    Pipeline,
    Worker,
    WorkerDied,
    WorkerPool,
)
from server.storage.postgres.database import Database, create_pool
from server.storage.postgres.queue import Ending, Output, QueueRepository
from taskgate.v1 import task_service_pb2 as pb
from tests.conftest import ROOT
from tests.support.clients import Tasks, blur, grayscale, task_user
from tests.support.images import image_bytes
from tests.support.polling import as_awaitable, eventually
from tests.support.servers import serving
from tests.support.task_rows import attempts_of

pytestmark = pytest.mark.timeout(60)


async def orphan(db: psycopg.AsyncConnection[TupleRow], task_id: str, attempts: int) -> None:
    """Make the task look claimed by a processor that died (its lease expired)."""
    await db.execute(
        """UPDATE tasks SET status = 'running', attempts = %(n)s, lease_owner = 'dead',
                  lease_expires_at = now() - interval '1 second', started_at = now()
           WHERE id = %(id)s""",
        {"id": task_id, "n": attempts},
    )
    await db.execute(
        "INSERT INTO task_attempts (task_id, attempt, processor_id, started_at)"
        " VALUES (%s, %s, 'dead', now())",
        (task_id, attempts),
    )


async def pending_task(
    settings: Settings, filters: list[pb.Filter] | None = None
) -> tuple[Tasks, str]:
    async with serving(settings, embedded_processor=False) as (_, client):
        tasks = await task_user(client)
        created = await tasks.create(image_bytes(16, 16), filters or [grayscale()])
        return tasks, created.task_id


async def test_an_expired_lease_is_rescued_and_the_task_retried(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    _, task_id = await pending_task(settings)
    await orphan(db, task_id, attempts=1)
    async with serving(settings):
        for _ in range(100):
            cursor = await db.execute(
                "SELECT status, attempts FROM tasks WHERE id = %s", (task_id,)
            )
            row = await cursor.fetchone()
            if row == ("completed", 2):
                break
            await asyncio.sleep(0.1)
        assert row == ("completed", 2)
    assert await attempts_of(db, task_id) == [(1, "lost"), (2, "completed")]


async def test_the_last_lost_attempt_fails_the_task_with_the_reason(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    _, task_id = await pending_task(settings)
    await orphan(db, task_id, attempts=3)
    async with serving(settings):
        for _ in range(100):
            cursor = await db.execute("SELECT status, error FROM tasks WHERE id = %s", (task_id,))
            status, error = await cursor.fetchone() or (None, None)
            if status != "running":
                break
            await asyncio.sleep(0.1)
    assert status == "failed"
    assert "lease expired" in error
    assert "3 attempts" in error
    assert await attempts_of(db, task_id) == [(3, "lost")]


async def test_a_filter_that_fails_on_its_input_fails_the_task_without_retry(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    tasks, task_id = await pending_task(settings)
    # Past validation (which refuses it up front), as if the rules had changed since.
    outside = FilterStep("crop", {"left": 0, "top": 0, "right": 900, "bottom": 10})
    await db.execute(
        "UPDATE tasks SET filters = %s WHERE id = %s", (Jsonb([outside.to_json()]), task_id)
    )
    async with serving(settings) as (_, client):
        tasks.stub = client.tasks
        final = await tasks.wait_until_ended(task_id)
    assert final.status == pb.TASK_STATUS_FAILED
    assert "filters[0].crop" in final.error
    assert final.attempts == 1
    assert await attempts_of(db, task_id) == [(1, "failed")]


async def test_only_the_lease_holder_can_finish_a_task(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    _, task_id = await pending_task(settings)
    pool = create_pool(
        settings.database_url.get_secret_value(),
        min_size=1,
        max_size=2,
        timeout=2,
        reconnect_timeout=2,
    )
    await pool.open()
    database = Database(pool=pool, timeout=2)
    try:
        holder = QueueRepository(database=database, owner="holder", lease=30)
        intruder = QueueRepository(database=database, owner="intruder", lease=30)
        (claimed,) = await holder.claim(5)
        assert claimed.image is not None  # read in the claim's round trip
        assert await holder.claim(5) == []  # nothing else is due
        job = claimed.job
        ending = Ending(job, TaskStatus.COMPLETED, output=Output(b"x", "image/png", 1, 1))
        assert await intruder.finish([ending]) == (set(), [])
        assert await intruder.record_progress(job, 1) is None
        assert await intruder.extend_leases([job.task_id]) == []
        assert await holder.finish([ending]) == ({job.task_id}, [])
        assert await holder.finish([ending]) == (set(), [])  # exactly once
    finally:
        await database.close()
    cursor = await db.execute("SELECT status, progress FROM tasks WHERE id = %s", (task_id,))
    assert await cursor.fetchone() == ("completed", 1)
    assert await attempts_of(db, task_id) == [(1, "completed")]


async def test_endings_claim_the_next_tasks_with_their_inputs_in_the_same_round_trip(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    first, second, third = [(await pending_task(settings))[1] for _ in range(3)]
    pool = create_pool(
        settings.database_url.get_secret_value(),
        min_size=1,
        max_size=1,
        timeout=2,
        reconnect_timeout=2,
    )
    await pool.open()
    database = Database(pool=pool, timeout=2)
    try:
        queue = QueueRepository(database=database, owner="one", lease=30)
        claimed = await queue.claim(2)  # three users: two of them in turn (ties by user id)
        rest = {first, second, third} - {str(c.job.task_id) for c in claimed}
        assert len(rest) == 1
        done = Ending(claimed[0].job, TaskStatus.COMPLETED, output=Output(b"x", "image/png", 1, 1))
        failed = Ending(claimed[1].job, TaskStatus.FAILED, "no good")
        ended, successors = await queue.finish([done, failed], claim=2)
        assert ended == {claimed[0].job.task_id, claimed[1].job.task_id}
        assert [str(s.job.task_id) for s in successors] == list(rest)
        assert successors[0].job.attempt == 1
        input_image = await queue.input_image(successors[0].job)
        assert input_image is not None
        assert successors[0].image == input_image
        cancelled = Ending(successors[0].job, TaskStatus.CANCELLED, "asked")
        assert await queue.finish([cancelled], claim=1) == ({successors[0].job.task_id}, [])
    finally:
        await database.close()
    in_order = [claimed[0].job.task_id, claimed[1].job.task_id, successors[0].job.task_id]
    cursor = await db.execute(
        "SELECT status, progress, error, result_size_bytes FROM tasks "
        "ORDER BY array_position(%s::uuid[], id)",
        (in_order,),
    )
    assert await cursor.fetchall() == [
        ("completed", 1, None, 1),
        ("failed", 0, "no good", None),
        ("cancelled", 0, "asked", None),
    ]
    outcomes = ["completed", "failed", "cancelled"]
    for task_id, outcome in zip(in_order, outcomes, strict=True):
        assert await attempts_of(db, str(task_id)) == [(1, outcome)]


async def test_shutdown_hands_running_tasks_back(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    async with serving(settings) as (app, client):
        tasks = await task_user(client)
        created = await tasks.create(image_bytes(1200, 1200), [blur(60)] * 20)
        for _ in range(200):
            if (await tasks.get(created.task_id)).status == pb.TASK_STATUS_RUNNING:
                break
            await asyncio.sleep(0.05)
        assert app.processor is not None
        await app.processor.stop(grace=0.1)
        got = await tasks.get(created.task_id)
        assert got.status == pb.TASK_STATUS_PENDING
    assert await attempts_of(db, created.task_id) == [(1, "released")]


async def test_finished_images_are_pruned_after_the_retention(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    async with serving(settings) as (app, client):
        tasks = await task_user(client)
        created = await tasks.create(image_bytes(), [grayscale()])
        await tasks.wait_until_ended(created.task_id)
        await tasks.result(created.task_id)
        await db.execute(
            "UPDATE tasks SET finished_at = now() - interval '8 days' WHERE id = %s",
            (created.task_id,),
        )
        assert app.processor is not None
        queue = app.processor.queue
        assert await queue.prune_images(retention=7 * 86400) == 1
        assert await queue.prune_images(retention=7 * 86400) == 0
        with pytest.raises(Exception, match="retention"):
            await tasks.result(created.task_id)
        assert (await tasks.get(created.task_id)).status == pb.TASK_STATUS_COMPLETED
    cursor = await db.execute(
        "SELECT input_image IS NULL, result_image IS NULL FROM tasks WHERE id = %s",
        (created.task_id,),
    )
    assert await cursor.fetchone() == (True, True)


async def test_a_dead_worker_process_costs_one_attempt_not_the_pool() -> None:
    pool = WorkerPool(size=1)
    steps = [FilterStep("blur", {"radius": 60.0})] * 20
    try:
        running = asyncio.create_task(
            pool.run(
                Pipeline(image_bytes(1200, 1200), steps, "png"),
                control=JobControl(),
                on_progress=lambda n: None,
            )
        )
        assert await eventually(lambda: as_awaitable(bool(pool._busy)))
        await asyncio.sleep(0.2)
        (worker,) = pool._busy
        worker._process.kill()
        with pytest.raises(WorkerDied):
            await running
        outcome = await pool.run(
            Pipeline(image_bytes(8, 8), [FilterStep("grayscale", {})], "png"),
            control=JobControl(),
            on_progress=lambda n: None,
        )
        assert isinstance(outcome, Done)
        bad = await pool.run(
            Pipeline(b"not an image", [FilterStep("grayscale", {})], "png"),
            control=JobControl(),
            on_progress=lambda n: None,
        )
        assert isinstance(bad, Failed)
    finally:
        await pool.close()


async def test_a_worker_that_died_while_idle_costs_no_job() -> None:
    pool = WorkerPool(size=1)
    tiny = Pipeline(image_bytes(8, 8), [FilterStep("grayscale", {})], "png")
    try:
        first = await pool.run(tiny, control=JobControl(), on_progress=lambda n: None)
        assert isinstance(first, Done)
        (worker,) = pool._idle
        os.kill(worker._process.pid, signal.SIGKILL)
        await worker._process.wait()
        outcome = await pool.run(tiny, control=JobControl(), on_progress=lambda n: None)
        assert isinstance(outcome, Done)
        assert len(pool._idle) == 1
        assert pool._idle[0] is not worker
    finally:
        await pool.close()


async def test_jobs_refused_by_a_dead_workers_socket_go_to_a_fresh_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process died, but the pool has not noticed yet: the send fails, and the
    jobs go to a fresh worker."""
    pool = WorkerPool(size=1)
    tiny = Pipeline(image_bytes(8, 8), [FilterStep("grayscale", {})], "png")
    try:
        await pool.run(tiny, control=JobControl(), on_progress=lambda n: None)
        (worker,) = pool._idle
        os.kill(worker._process.pid, signal.SIGKILL)
        await worker._process.wait()
        # As if its end had not been seen yet: only the send can tell.
        monkeypatch.setattr(Worker, "alive", property(lambda self: True))
        outcome = await pool.run(tiny, control=JobControl(), on_progress=lambda n: None)
        assert isinstance(outcome, Done)
    finally:
        await pool.close()


def worker_pids() -> set[int]:
    """This test process's worker processes (``python -m server.processor.worker``)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat, open(f"/proc/{entry}/cmdline", "rb") as cmd:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
                command = cmd.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"server.processor.worker" in command:
            found.add(int(entry))
    return found


async def test_a_task_after_an_idle_worker_was_killed_completes_on_its_first_attempt(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    async with serving(settings, processor_concurrency=1, processor_workers=1) as (_, client):
        tasks = await task_user(client)
        first = await tasks.create(image_bytes(16, 16), [grayscale()])
        assert (await tasks.wait_until_ended(first.task_id)).status == pb.TASK_STATUS_COMPLETED
        (pid,) = worker_pids()
        os.kill(pid, signal.SIGKILL)
        assert await eventually(lambda: as_awaitable(pid not in worker_pids()))
        second = await tasks.create(image_bytes(16, 16), [grayscale()])
        ended = await tasks.wait_until_ended(second.task_id)
        assert ended.status == pb.TASK_STATUS_COMPLETED
        assert await attempts_of(db, second.task_id) == [(1, "completed")]


async def test_a_worker_killed_mid_task_costs_that_attempt_as_an_error_not_a_lease(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    async with serving(
        settings, processor_concurrency=1, processor_workers=1, task_retry_backoff=0.1
    ) as (_, client):
        tasks = await task_user(client)
        created = await tasks.create(image_bytes(1200, 1200), [blur(60)] * 20)

        async def running() -> bool:
            task = await tasks.get(created.task_id)
            return task.status == pb.TASK_STATUS_RUNNING and task.progress >= 1

        assert await eventually(running)
        (pid,) = worker_pids()
        os.kill(pid, signal.SIGKILL)
        ended = await tasks.wait_until_ended(created.task_id)
    assert ended.status == pb.TASK_STATUS_COMPLETED
    assert await attempts_of(db, created.task_id) == [(1, "error"), (2, "completed")]


async def test_light_pipelines_handed_over_together_share_one_worker_trip() -> None:
    pool = WorkerPool(size=2)
    tiny = Pipeline(image_bytes(8, 8), [FilterStep("grayscale", {})], "png", size=(8, 8))
    grow = FilterStep("resize", {"width": 512, "height": 512})
    assert tiny.light
    assert not Pipeline(tiny.image, [grow], "png", size=(8, 8)).light
    assert not Pipeline(tiny.image, tiny.steps, "png").light  # size unknown
    bad = Pipeline(b"not an image", tiny.steps, "png", size=(8, 8))
    try:
        outcomes = await asyncio.gather(
            *(
                pool.run(pipeline, control=JobControl(), on_progress=lambda n: None)
                for pipeline in (tiny, bad, tiny)
            )
        )
        assert [type(outcome) for outcome in outcomes] == [Done, Failed, Done]
        assert len(pool._idle) == 1  # one worker ran the three, in one message each way
    finally:
        await pool.close()


@pytest.fixture
def processor_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "TASKGATE_DATABASE_URL": settings.database_url.get_secret_value(),
        "TASKGATE_PROCESSOR_CONCURRENCY": "1",
        "TASKGATE_PROCESSOR_WORKERS": "1",
        "TASKGATE_PROCESSOR_METRICS_ADDR": "127.0.0.1:0",
        "TASKGATE_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "server.processor"], cwd=ROOT, env=env, stderr=subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


async def test_the_standalone_processor_runs_tasks_and_stops_on_sigterm(
    settings: Settings,
    db: psycopg.AsyncConnection[TupleRow],
    processor_process: subprocess.Popen[bytes],
) -> None:
    _, task_id = await pending_task(settings)

    async def completed() -> bool:
        cursor = await db.execute("SELECT status FROM tasks WHERE id = %s", (task_id,))
        return (await cursor.fetchone()) == ("completed",)

    assert await eventually(completed)
    processor_process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(processor_process.wait, 15) == 0
    assert processor_process.stderr is not None
    assert "Traceback" not in processor_process.stderr.read().decode()
