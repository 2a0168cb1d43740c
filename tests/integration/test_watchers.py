"""WatchTask fans out: 200 streams on one server, one listening connection."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg.rows import TupleRow

from server.config import Settings
from server.metrics import TaskMetrics
from server.processor.runtime import ProcessorRuntime
from server.storage.postgres.listener import Listener
from taskgate.v1 import task_service_pb2 as pb
from tests.support.clients import Tasks, grayscale, task_user
from tests.support.images import image_bytes
from tests.support.servers import serving

WATCHERS = 200

pytestmark = pytest.mark.timeout(120)


async def backends(db: psycopg.AsyncConnection[TupleRow], database: str) -> int:
    cursor = await db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_two_hundred_watchers_see_their_tasks_end_on_bounded_connections(
    settings: Settings,
) -> None:
    url = settings.database_url.get_secret_value()
    database = url.rsplit("/", 1)[1]
    async with serving(
        settings, embedded_processor=False, db_pool_max_size=5, max_streams_per_user=WATCHERS
    ) as (app, client):
        tasks = await task_user(client)
        image = image_bytes(16, 16)
        ids = [(await tasks.create(image, [grayscale()])).task_id for _ in range(WATCHERS)]
        calls = [
            tasks.stub.WatchTask(pb.WatchTaskRequest(task_id=i), metadata=tasks.metadata)
            for i in ids
        ]
        for call in calls:
            first = await call.read()
            assert isinstance(first, pb.WatchTaskResponse)
            assert first.task.status == pb.TASK_STATUS_PENDING

        async def rest(
            call: grpc.aio.UnaryStreamCall[pb.WatchTaskRequest, pb.WatchTaskResponse],
        ) -> int:
            last = 0
            while isinstance(message := await call.read(), pb.WatchTaskResponse):
                last = int(message.task.status)
            return last

        watching = [asyncio.create_task(rest(call)) for call in calls]
        # A processor elsewhere (its own pool and listener) works the queue.
        listener = Listener(conninfo=url, connect_timeout=2)
        runtime = ProcessorRuntime(
            settings.embedded_processor_settings(),
            listener=listener,
            metrics=TaskMetrics(CollectorRegistry()),
        )
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
            before = await backends(db, database)
            await runtime.start()
            listener.start()
            peak_total = 0
            try:
                while not all(w.done() for w in watching):
                    peak_total = max(peak_total, await backends(db, database))
                    await asyncio.sleep(0.05)
            finally:
                await runtime.stop(1.0)
                await listener.stop()
        finals = [w.result() for w in watching]
        assert finals == [pb.TASK_STATUS_COMPLETED] * WATCHERS
        # The server's own connections: its pool and one listener, whatever the watchers.
        server_limit = 5 + 1
        processor_limit = settings.processor_pool_size + 1
        assert before <= server_limit
        assert peak_total <= server_limit + processor_limit
        assert len(app.tasks._events) == 0  # every watcher unregistered


async def test_a_client_that_goes_away_frees_its_watch(settings: Settings) -> None:
    async with serving(settings, embedded_processor=False) as (app, client):
        tasks: Tasks = await task_user(client)
        created = await tasks.create(image_bytes(), [grayscale()])
        call = tasks.stub.WatchTask(
            pb.WatchTaskRequest(task_id=created.task_id), metadata=tasks.metadata
        )
        await call.read()
        assert len(app.tasks._events) == 1
        call.cancel()
        for _ in range(100):
            if len(app.tasks._events) == 0:
                break
            await asyncio.sleep(0.02)
        assert len(app.tasks._events) == 0


async def test_the_listener_reconnects_and_watchers_carry_on(settings: Settings) -> None:
    url = settings.database_url.get_secret_value()
    async with serving(settings, watch_poll_interval=30.0) as (app, client):
        tasks: Tasks = await task_user(client)
        await asyncio.wait_for(app.listener.connected.wait(), 5)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
            cursor = await db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
            )
            assert await cursor.fetchall() == [(True,)]  # the process's one listener
        await asyncio.sleep(0.1)
        await asyncio.wait_for(app.listener.connected.wait(), 5)
        # Woken by notifications again (the poll interval is far longer than the wait).
        created = await tasks.create(image_bytes(), [grayscale()])
        final = await asyncio.wait_for(tasks.wait_until_ended(created.task_id), 10)
        assert final.status == pb.TASK_STATUS_COMPLETED
