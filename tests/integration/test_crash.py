"""Processors killed at random moments lose no task and complete none twice.

Three ``python -m server.processor`` processes work through 300 tasks while
the test SIGKILLs one that holds a running task at random moments (and restarts it), at least
ten times. Afterwards every task is COMPLETED with exactly one successful
attempt, and every attempt a killed processor had started is recorded as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from psycopg.rows import TupleRow

from server.config import Settings
from tests.conftest import ROOT
from tests.support.clients import blur, task_user
from tests.support.images import image_bytes
from tests.support.polling import eventually
from tests.support.servers import serving

TASKS = 300
PROCESSORS = 3
KILLS = 12

pytestmark = pytest.mark.timeout(240)


def start_processor(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TASKGATE_DATABASE_URL": settings.database_url.get_secret_value(),
        "TASKGATE_PROCESSOR_CONCURRENCY": "2",
        "TASKGATE_PROCESSOR_WORKERS": "1",
        "TASKGATE_PROCESSOR_POLL_INTERVAL": "500ms",
        "TASKGATE_TASK_LEASE": "1500ms",
        "TASKGATE_TASK_RETRY_BACKOFF": "50ms",
        "TASKGATE_TASK_RETRY_BACKOFF_MAX": "200ms",
        "TASKGATE_PROCESSOR_METRICS_ADDR": "127.0.0.1:0",
        "TASKGATE_LOG_LEVEL": "error",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "server.processor"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def counts(db: psycopg.AsyncConnection[TupleRow]) -> dict[str, int]:
    cursor = await db.execute("SELECT status, count(*) FROM tasks GROUP BY status")
    return {str(status): int(n) for status, n in await cursor.fetchall()}


async def busy_pids(db: psycopg.AsyncConnection[TupleRow]) -> set[int]:
    """Processes holding a running task's lease (processor ids are host:pid:nonce)."""
    cursor = await db.execute(
        "SELECT DISTINCT split_part(lease_owner, ':', 2) FROM tasks WHERE status = 'running'"
    )
    return {int(pid) for (pid,) in await cursor.fetchall() if str(pid).isdigit()}


async def test_random_sigkills_lose_no_task_and_complete_none_twice(settings: Settings) -> None:
    rng = random.Random(int(time.time()))
    async with serving(settings, embedded_processor=False, task_max_attempts=50) as (_, client):
        tasks = await task_user(client)
        image = image_bytes(480, 480)
        # Each task takes long enough (tens of ms) that kills land mid-pipeline.
        created = await asyncio.gather(
            *(tasks.create(image, [blur(4), blur(4), blur(4)]) for _ in range(TASKS))
        )
    ids = {task.task_id for task in created}
    assert len(ids) == TASKS

    processors = [start_processor(settings) for _ in range(PROCESSORS)]
    kills = 0
    try:
        async with await psycopg.AsyncConnection.connect(
            settings.database_url.get_secret_value(), autocommit=True
        ) as db:
            while kills < KILLS and (await counts(db)).get("completed", 0) < TASKS:
                await asyncio.sleep(rng.uniform(0.1, 0.5))
                # A random moment at which a processor is mid-task: on a loaded
                # machine a restarted processor can take seconds to claim anything.
                busy = await busy_pids(db)
                candidates = [i for i, p in enumerate(processors) if p.pid in busy]
                if not candidates:
                    continue
                victim = rng.choice(candidates)
                processors[victim].send_signal(signal.SIGKILL)
                processors[victim].wait()
                processors[victim] = start_processor(settings)
                kills += 1

            async def all_done() -> bool:
                return (await counts(db)).get("completed", 0) == TASKS

            with contextlib.suppress(TimeoutError):
                await eventually(all_done, within=120, interval=0.2)
            final = await counts(db)
            cursor = await db.execute(
                """SELECT t.id, t.attempts,
                          count(a.*) FILTER (WHERE a.outcome = 'completed'),
                          count(a.*),
                          count(a.*) FILTER (WHERE a.outcome IN ('lost', 'running'))
                   FROM tasks t LEFT JOIN task_attempts a ON a.task_id = t.id
                   GROUP BY t.id, t.attempts"""
            )
            rows = await cursor.fetchall()
            cursor = await db.execute("SELECT count(*) FROM task_attempts WHERE outcome = 'lost'")
            (lost,) = await cursor.fetchone() or (0,)
    finally:
        for process in processors:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processors:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    assert kills >= 10, f"only {kills} kills happened before the work ran out"
    assert final == {"completed": TASKS}
    assert {str(row[0]) for row in rows} == ids
    for task_id, attempts, completed, recorded, _ in rows:
        assert completed == 1, f"task {task_id}: {completed} successful attempts"
        assert recorded == attempts, f"task {task_id}: {recorded} attempt rows, {attempts} attempts"
    retried = sum(1 for row in rows if row[1] > 1)
    assert lost >= 1
    assert retried >= 1, "no kill landed on a running task"
