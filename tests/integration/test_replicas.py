"""Reads on a real streaming replica, with its replay paused to make it stale:
a caller never reads older data than they wrote or have already seen.

The machine's test Postgres allows no replication, so these tests start a
primary of their own (devstack's, on a free port, as the unprivileged user)
and a replica of it with ``pg_basebackup -R``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from devstack.around import TEST_TUNING
from devstack.databases import LocalPostgres, LocalReplica
from devstack.stack import local_databases, local_replica, migrate
from server.app import App
from server.config import Settings
from server.metrics import TaskMetrics
from server.processor.runtime import ProcessorRuntime
from server.storage.postgres.listener import Listener
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import user_service_pb2 as user_pb
from tests.support.clients import Client, Tasks, bearer, grayscale, task_user
from tests.support.images import image_bytes
from tests.support.polling import eventually
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(120)

DATABASE = "taskgate_replicated"
ORDER: dict[int, int] = {
    pb.TASK_STATUS_PENDING: 0,
    pb.TASK_STATUS_RUNNING: 1,
    pb.TASK_STATUS_COMPLETED: 2,
    pb.TASK_STATUS_FAILED: 2,
    pb.TASK_STATUS_CANCELLED: 2,
}


@pytest.fixture(scope="module")
def primary() -> Iterator[LocalPostgres]:
    with (
        tempfile.TemporaryDirectory(prefix="taskgate-replicas-") as folder,
        local_databases(
            Path(folder), prefer=os.environ.get("TASKGATE_DEV_BINARIES", "machine"),
            tuning=TEST_TUNING,
        ) as (postgres, _),
    ):  # fmt: skip
        migrate(postgres.admin_url(DATABASE), os.environ)
        yield postgres


@pytest.fixture(scope="module")
def replica(primary: LocalPostgres) -> Iterator[LocalReplica]:
    with local_replica(primary) as started:
        yield started


@pytest.fixture
async def replicated(
    settings: Settings, primary: LocalPostgres, replica: LocalReplica
) -> AsyncIterator[Settings]:
    """The test's settings on the primary with one replica, its replay running."""
    await set_replay(replica, paused=False)
    yield settings.model_copy(
        update={
            "database_url": SecretStr(primary.admin_url(DATABASE)),
            "database_replica_urls": SecretStr(replica.admin_url(DATABASE)),
            "database_replica_check_interval": 0.05,
            "database_replica_max_lag": 30.0,
            "embedded_processor": False,
        }
    )
    await set_replay(replica, paused=False)


async def set_replay(replica: LocalReplica, *, paused: bool) -> None:
    async with await psycopg.AsyncConnection.connect(replica.admin_url(), autocommit=True) as db:
        await db.execute(
            "SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()"
        )
        if paused:
            while True:
                cursor = await db.execute("SELECT pg_get_wal_replay_pause_state()")
                row = await cursor.fetchone()
                if row is not None and row[0] == "paused":
                    return
                await asyncio.sleep(0.02)


def reads(app: App, target: str, reason: str) -> float:
    value = app.registry.get_sample_value("db_reads_total", {"target": target, "reason": reason})
    return value or 0.0


async def on_replica(app: App, read: Any) -> bool:
    """Whether ``read()`` was answered by the replica."""
    before = reads(app, "replica", "fresh")
    await read()
    return reads(app, "replica", "fresh") > before


async def in_rotation(app: App) -> bool:
    return all(replica.in_rotation for replica in app.reads.replicas)


async def fresh_user(app: App, client: Client) -> Tasks:
    """A user whose reads the replica serves again (it has replayed the registration)."""
    user = await task_user(client)
    await eventually(lambda: on_replica(app, lambda: user.list_page()))
    return user


async def test_own_writes_are_read_back_while_the_replica_is_stale(
    replicated: Settings, replica: LocalReplica
) -> None:
    async with serving(replicated) as (app, client):
        await eventually(lambda: in_rotation(app))
        other = await fresh_user(app, client)
        older = await other.create(image_bytes(8, 8), [grayscale()])
        await eventually(lambda: on_replica(app, lambda: other.get(older.task_id)))
        await set_replay(replica, paused=True)

        me = await task_user(client)  # registered and logged in while the replica is stale
        created = await me.create(image_bytes(8, 8), [grayscale()])
        assert (await me.get(created.task_id)).task_id == created.task_id
        assert [t.task_id for t in (await me.list_page()).tasks] == [created.task_id]
        await me.cancel(created.task_id)
        assert (await me.get(created.task_id)).status == pb.TASK_STATUS_CANCELLED
        assert reads(app, "primary", "stale") >= 4

        # Another user, who has written nothing since, is still served by the replica.
        assert await on_replica(app, lambda: other.get(older.task_id))

        await set_replay(replica, paused=False)
        await eventually(lambda: on_replica(app, lambda: me.get(created.task_id)))
        assert (await me.get(created.task_id)).status == pb.TASK_STATUS_CANCELLED


async def test_a_deleted_user_stays_deleted_while_the_replica_still_has_them(
    replicated: Settings, replica: LocalReplica
) -> None:
    async with serving(replicated) as (app, client):
        await eventually(lambda: in_rotation(app))
        user, token = await client.register_and_login()
        await eventually(lambda: on_replica(app, lambda: Tasks(client, token).list_page()))
        await set_replay(replica, paused=True)
        await client.users.DeleteUser(
            user_pb.DeleteUserRequest(user_id=user.user_id), metadata=bearer(token)
        )
        with pytest.raises(grpc.aio.AioRpcError) as login:
            await client.login(user.username)
        assert login.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as listing:
            await Tasks(client, token).list_page()
        assert listing.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_task_finished_by_the_processor_never_goes_back(
    replicated: Settings, replica: LocalReplica, primary: LocalPostgres
) -> None:
    async with serving(replicated) as (app, client):
        await eventually(lambda: in_rotation(app))
        me = await fresh_user(app, client)
        created = await me.create(image_bytes(8, 8), [grayscale()])
        await eventually(lambda: on_replica(app, lambda: me.get(created.task_id)))
        await set_replay(replica, paused=True)

        seen: list[int] = []
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                seen.append((await me.get(created.task_id)).status)
                await asyncio.sleep(0.01)

        polling = asyncio.create_task(poll())
        watched = asyncio.create_task(me.watch(created.task_id))
        await asyncio.sleep(0.2)  # the watcher's first read, then the processor
        listener = Listener(conninfo=primary.admin_url(DATABASE), connect_timeout=2)
        runtime = ProcessorRuntime(
            replicated.embedded_processor_settings(),
            listener=listener,
            metrics=TaskMetrics(CollectorRegistry()),
        )
        await runtime.start()
        listener.start()
        try:
            statuses = [task.status for task in await asyncio.wait_for(watched, 30)]
        finally:
            await runtime.stop(1.0)
            await listener.stop()
        after = await me.get(created.task_id)
        content_type, data = await me.result(created.task_id)  # its metadata and chunks
        stop.set()
        await polling

    assert content_type == "image/png"
    assert data.startswith(b"\x89PNG")
    assert statuses[-1] == pb.TASK_STATUS_COMPLETED
    assert after.status == pb.TASK_STATUS_COMPLETED
    for observed in (statuses, seen):
        ranks = [ORDER[s] for s in observed]
        assert ranks == sorted(ranks), observed


async def test_a_lagging_replica_leaves_the_rotation_and_comes_back(
    replicated: Settings, replica: LocalReplica
) -> None:
    lagging = replicated.model_copy(update={"database_replica_max_lag": 0.5})
    async with serving(lagging) as (app, client):
        await eventually(lambda: in_rotation(app))
        other = await fresh_user(app, client)
        await set_replay(replica, paused=True)
        writer = await task_user(client)
        for _ in range(3):
            await writer.create(image_bytes(8, 8), [grayscale()])
            await asyncio.sleep(0.3)
        await eventually(lambda: _out_of_rotation(app), within=5)
        assert app.registry.get_sample_value("db_replica_in_rotation", {"replica": "0"}) == 0
        lag = app.registry.get_sample_value("db_replica_lag_bytes", {"replica": "0"})
        assert (lag or 0) > 0
        before = reads(app, "primary", "down")
        await other.list_page()
        assert reads(app, "primary", "down") == before + 1

        await set_replay(replica, paused=False)
        await eventually(lambda: in_rotation(app), within=5)
        assert app.registry.get_sample_value("db_replica_lag_seconds", {"replica": "0"}) == 0


async def _out_of_rotation(app: App) -> bool:
    return not any(replica.in_rotation for replica in app.reads.replicas)


async def test_killing_the_replica_mid_load_fails_no_call(
    replicated: Settings, primary: LocalPostgres
) -> None:
    with local_replica(primary, name="postgres-doomed") as doomed:
        settings = replicated.model_copy(
            update={"database_replica_urls": SecretStr(doomed.admin_url(DATABASE))}
        )
        async with serving(settings) as (app, client):
            await eventually(lambda: in_rotation(app), within=10)
            users = [await fresh_user(app, client) for _ in range(3)]
            ids = [(await u.create(image_bytes(8, 8), [grayscale()])).task_id for u in users]
            stop = asyncio.Event()
            answered = 0

            async def load(user: Tasks, task_id: str) -> None:
                nonlocal answered
                while not stop.is_set():
                    await user.get(task_id)
                    await user.list_page()
                    answered += 2

            running = [asyncio.create_task(load(u, i)) for u, i in zip(users, ids, strict=True)]
            await asyncio.sleep(0.5)
            assert doomed.child is not None
            served_by_replica = reads(app, "replica", "fresh")
            os.kill(doomed.child.process.pid, signal.SIGKILL)
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*running)  # any failed call raises here
            assert served_by_replica > 0
            assert answered > 0
            assert await _out_of_rotation(app)
            assert reads(app, "primary", "down") > 0
