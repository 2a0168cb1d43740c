"""``make bench-replicas``: a read-after-write load on the primary alone, and on
the primary with one streaming replica, in one run.

A primary of the bench's own and a replica of it (devstack's, ``pg_basebackup
-R``), one Redis; the server runs in this process with its processor. Each of
``--users`` users loops: CreateTask (a tiny image), GetTask every --poll-ms (10 ms) until
it is COMPLETED, then ListTasks. A checker counts stale reads: a GetTask that
does not find the task just created, a status older than one already seen, a
ListTasks without the task. Rounds: primary only; one replica (a stale read
goes to the primary at once); one replica with TASKGATE_DATABASE_REPLICA_WAIT.

Reported per round: reads served by the replica (share), the primary's CPU
per request (its postmaster and backends, from /proc), read latency p50/p99,
stale reads (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
from PIL import Image
from pydantic import SecretStr

from bench.infra import process_cpu_seconds
from devstack.around import TEST_TUNING
from devstack.databases import LocalPostgres
from devstack.stack import local_databases, local_replica, migrate
from server.app import App
from server.config import Settings
from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import session_service_pb2_grpc as session_grpc
from taskgate.v1 import task_service_pb2 as task_pb
from taskgate.v1 import task_service_pb2_grpc as task_grpc
from taskgate.v1 import user_service_pb2 as user_pb
from taskgate.v1 import user_service_pb2_grpc as user_grpc

DATABASE = "taskgate_bench_replicas"
RANK = {
    task_pb.TASK_STATUS_PENDING: 0,
    task_pb.TASK_STATUS_RUNNING: 1,
    task_pb.TASK_STATUS_COMPLETED: 2,
}


@functools.cache
def tiny_png() -> bytes:
    """An 8x8 PNG: the smallest work, so the reads dominate."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "teal").save(out, "PNG")
    return out.getvalue()


@dataclass
class Round:
    name: str
    reads: list[float] = field(default_factory=list)
    writes: int = 0
    stale: int = 0
    replica_reads: float = 0.0
    routed_reads: float = 0.0
    primary_cpu: float = 0.0

    def report(self) -> str:
        ordered = sorted(self.reads)
        p50 = statistics.median(ordered) * 1000 if ordered else 0.0
        p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000 if ordered else 0.0
        share = self.replica_reads / self.routed_reads if self.routed_reads else 0.0
        requests = len(self.reads) + self.writes
        per_request = self.primary_cpu / requests * 1e6 if requests else 0.0
        return (
            f"{self.name:<28} {len(self.reads):>6} reads {self.writes:>5} tasks  "
            f"replica share {share:6.1%}  primary CPU/request {per_request:6.0f} µs  "
            f"read p50 {p50:5.2f} ms p99 {p99:6.2f} ms  stale reads {self.stale}"
        )


def postgres_cpu(postgres: LocalPostgres) -> float:
    """CPU seconds of the postmaster and every process under it (its backends)."""
    assert postgres.child is not None
    root = postgres.child.process.pid
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == root or int(stat[1]) == root:
            total += process_cpu_seconds(int(entry.name)) or 0.0
    return total


async def user_loop(channel: grpc.aio.Channel, until: float, poll: float, result: Round) -> None:
    users = user_grpc.UserServiceStub(channel)
    sessions = session_grpc.SessionServiceStub(channel)
    tasks = task_grpc.TaskServiceStub(channel)
    name, password = f"bench_{secrets.token_hex(4)}", "correct horse battery"
    await users.CreateUser(user_pb.CreateUserRequest(username=name, password=password))
    session = await sessions.CreateSession(
        session_pb.CreateSessionRequest(username=name, password=password)
    )
    metadata = (("authorization", f"Bearer {session.session.session_id}"),)
    request = task_pb.CreateTaskRequest(
        image=tiny_png(), filters=[task_pb.Filter(grayscale=task_pb.Filter.Grayscale())]
    )
    while time.monotonic() < until:
        created = (await tasks.CreateTask(request, metadata=metadata)).task
        result.writes += 1
        seen = 0
        while True:
            started = time.perf_counter()
            try:
                task = (
                    await tasks.GetTask(
                        task_pb.GetTaskRequest(task_id=created.task_id), metadata=metadata
                    )
                ).task
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                result.stale += 1  # our own task, not there
                continue
            result.reads.append(time.perf_counter() - started)
            rank = RANK.get(task.status, 2)
            if rank < seen:
                result.stale += 1
            seen = max(seen, rank)
            if task.status == task_pb.TASK_STATUS_COMPLETED:
                break
            await asyncio.sleep(poll)
        started = time.perf_counter()
        listed = await tasks.ListTasks(task_pb.ListTasksRequest(page_size=10), metadata=metadata)
        result.reads.append(time.perf_counter() - started)
        if created.task_id not in {t.task_id for t in listed.tasks}:
            result.stale += 1


async def run_round(
    name: str, settings: Settings, primary: LocalPostgres, users: int, seconds: float, poll: float
) -> Round:
    result = Round(name)
    app = App(settings)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            if app.reads.replicas:
                while not all(r.in_rotation for r in app.reads.replicas):  # noqa: ASYNC110 - the monitor's task sets it
                    await asyncio.sleep(0.05)
            before = postgres_cpu(primary)
            until = time.monotonic() + seconds
            await asyncio.gather(*(user_loop(channel, until, poll, result) for _ in range(users)))
            result.primary_cpu = postgres_cpu(primary) - before
        samples = {
            (s.labels["target"], s.labels["reason"]): s.value
            for family in app.registry.collect()
            if family.name == "db_reads"
            for s in family.samples
            if s.name == "db_reads_total"
        }
        result.routed_reads = sum(samples.values())
        result.replica_reads = sum(v for (target, _), v in samples.items() if target == "replica")
    finally:
        await app.stop(grace=1.0)
    return result


@contextlib.contextmanager
def databases() -> Iterator[tuple[LocalPostgres, str, str, str]]:
    """A primary, a replica of it, a Redis: (primary, primary URL, replica URL, Redis URL)."""
    prefer = os.environ.get("TASKGATE_DEV_BINARIES", "machine")
    with (
        tempfile.TemporaryDirectory(prefix="taskgate-bench-replicas-") as folder,
        local_databases(Path(folder), prefer=prefer, tuning=TEST_TUNING) as (postgres, redis),
    ):
        migrate(postgres.admin_url(DATABASE), os.environ)
        # The throwaway servers skip fsync, but commits must be flushed (and so
        # streamed) at once, as in production: synchronous_commit=off would hold
        # WAL back for up to wal_writer_delay (200 ms) and make the replica look stale.
        with psycopg.connect(postgres.admin_url(), autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {DATABASE} SET synchronous_commit = on")
        with local_replica(postgres) as replica:
            yield postgres, postgres.admin_url(DATABASE), replica.admin_url(DATABASE), redis.url


async def main_async(args: argparse.Namespace) -> None:
    with databases() as (primary, primary_url, replica_url, redis_url):
        base = Settings(
            database_url=SecretStr(primary_url),
            redis_url=SecretStr(redis_url),
            grpc_addr="127.0.0.1:0",
            metrics_addr="127.0.0.1:0",
            log_level="warning",
            argon2_time_cost=1,
            argon2_memory_kib=1024,
            argon2_parallelism=1,
            processor_poll_interval=1.0,
            database_replica_check_interval=0.1,
            client_register_limit=10_000,
            client_login_limit=10_000,
            password_hash_queue=64,
        )
        with_replica = base.model_copy(update={"database_replica_urls": SecretStr(replica_url)})
        rounds = [
            ("primary only", base),
            ("primary + replica", with_replica),
            (
                f"primary + replica, wait {args.wait_ms:g} ms",
                with_replica.model_copy(update={"database_replica_wait": args.wait_ms / 1000}),
            ),
        ]
        print(f"{args.users} users, {args.seconds:g} s a round, create → poll → list")
        for name, settings in rounds:
            result = await run_round(
                name, settings, primary, args.users, args.seconds, args.poll_ms / 1000
            )
            print(result.report(), flush=True)
            if result.stale:
                raise SystemExit(f"{name}: {result.stale} stale reads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--wait-ms", type=float, default=5.0)
    parser.add_argument("--poll-ms", type=float, default=10.0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
