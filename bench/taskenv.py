"""Throw-away environments and database helpers for ``python -m bench.tasks``.

- :class:`TaskEnv`: a migrated taskgate database and either the server
  (``python -m server``, embedded processor on) or a processor alone
  (``python -m server.processor``) as a subprocess.
- :class:`ProcrastinateEnv`: a database with procrastinate's schema and a
  procrastinate worker (``python -m bench.procrastinate_app``) as a subprocess.
- Inserting tasks with the very statement CreateTask runs (``insert_task``),
  waiting for them to end, and reading timings back (Postgres's clock).

The bench's own connections say ``application_name = taskgate-bench``, so the
Postgres backends of the system under test are the database's other ones.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from bench.infra import ROOT, BenchEnv, BenchError, free_port, with_database
from bench.procrastinate_app import make_app
from server.imaging.images import ImageInfo
from server.storage.postgres.queries import QUERIES

BENCH_APPLICATION = "taskgate-bench"
POLL_INTERVAL = 0.02
STALL_TIMEOUT = 30.0  # no task ended for this long: the benchmark failed

Conn = psycopg.AsyncConnection[dict[str, Any]]


async def connect(url: str) -> Conn:
    return await psycopg.AsyncConnection.connect(
        url, autocommit=True, application_name=BENCH_APPLICATION, row_factory=dict_row
    )


async def one(conn: Conn, query: str | sql.Composable, params: Any = None) -> dict[str, Any]:
    cursor = await conn.execute(query, params)  # type: ignore[arg-type]
    row = await cursor.fetchone()
    assert row is not None
    return row


async def column(conn: Conn, query: str, params: Any = None) -> list[Any]:
    cursor = await conn.execute(query, params)
    return [next(iter(row.values())) for row in await cursor.fetchall()]


async def backend_pids(conn: Conn) -> list[int]:
    """The Postgres backends serving the system under test (not the bench) in this database."""
    return await column(
        conn,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name <> %s AND backend_type = 'client backend'",
        (BENCH_APPLICATION,),
    )


def _spawn(
    args: list[str], env: dict[str, str], name: str, cwd: Path = ROOT
) -> tuple[subprocess.Popen[bytes], Path]:
    fd, log_name = tempfile.mkstemp(prefix=f"taskgate-bench-{name}-", suffix=".log")
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    return process, Path(log_name)


def _stop(process: subprocess.Popen[bytes] | None, what: str) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        raise BenchError(f"{what} ignored SIGTERM for 20s; killed it") from None


def _tail(path: Path | None, limit: int = 3000) -> str:
    if path is None:
        return ""
    try:
        return path.read_bytes()[-limit:].decode(errors="replace")
    except OSError:
        return ""


# -- taskgate -----------------------------------------------------------------------------


@dataclass
class TaskEnv(BenchEnv):
    """A migrated database and, once started, the server or a processor alone."""

    concurrency: int = 2
    workers: int = 2

    def _environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "TASKGATE_DATABASE_URL": self.database_url,
            "TASKGATE_REDIS_URL": self.redis_url,
            "TASKGATE_REDIS_KEY_PREFIX": self.redis_prefix,
            "TASKGATE_SERVER_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "TASKGATE_PROCESSOR_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "TASKGATE_LOG_LEVEL": self.log_level,
            "TASKGATE_PROCESSOR_CONCURRENCY": str(self.concurrency),
            "TASKGATE_PROCESSOR_WORKERS": str(self.workers),
            "TASKGATE_ARGON2_TIME_COST": "1",
            "TASKGATE_ARGON2_MEMORY_KIB": "8192",
            "TASKGATE_ARGON2_PARALLELISM": "1",
            **self.extra_env,
        }

    def start_server(self) -> None:
        """``python -m server`` with its embedded processor (the default deployment)."""
        self.port = free_port()
        env = {**self._environment(), "TASKGATE_GRPC_ADDR": self.target}
        env["TASKGATE_EMBEDDED_PROCESSOR"] = "true"
        self.process, self._log_path = _spawn([sys.executable, "-m", "server"], env, "server")

    def start_processor(self) -> None:
        """``python -m server.processor``: a processor alone, needing only Postgres
        (that of ``root``, a baseline tree's, with its own modules first on the path)."""
        env = self._environment()
        if self.root != ROOT:
            env["PYTHONPATH"] = os.pathsep.join([str(self.root), str(self.root / "gen")])
        self.process, self._log_path = _spawn(
            [sys.executable, "-m", "server.processor"], env, "processor", cwd=self.root
        )

    def start_dispatcher(self) -> None:
        """``python -m server.webhooks``: a webhook dispatcher alone."""
        env = {**self._environment(), "TASKGATE_WEBHOOK_METRICS_ADDR": f"127.0.0.1:{free_port()}"}
        self.process, self._log_path = _spawn(
            [sys.executable, "-m", "server.webhooks"], env, "dispatcher"
        )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(
                f"the taskgate process exited with {self.process.returncode}:\n"
                + self.server_log_tail()
            )


@dataclass(frozen=True)
class TaskBatch:
    """What to insert: the same row CreateTask would store for a validated submission."""

    user_id: UUID
    image: bytes
    info: ImageInfo
    filters: Sequence[dict[str, Any]]
    output_format: str = "png"
    max_attempts: int = 3


async def insert_user(conn: Conn, username: str) -> UUID:
    row = await one(
        conn, QUERIES["insert_user"], {"username": username, "password_hash": "not-a-hash"}
    )
    user_id: UUID = row["id"]
    return user_id


def _task_params(batch: TaskBatch, request_id: str) -> dict[str, Any]:
    return {
        "user_id": batch.user_id,
        "filters": Jsonb(list(batch.filters)),
        "output_format": batch.output_format,
        "idempotency_key": None,
        "request_hash": None,
        "request_id": request_id,
        "image": batch.image,
        "content_type": batch.info.content_type,
        "width": batch.info.width,
        "height": batch.info.height,
        "size_bytes": batch.info.size_bytes,
        "max_attempts": batch.max_attempts,
        "priority": 0,
        "max_pending": 0,  # the bench's backlogs are not limited
        "trace_context": None,
    }


async def insert_tasks(
    conn: Conn, batch: TaskBatch, count: int, request_id: str, statement: Any = None
) -> None:
    """``count`` tasks in one transaction (all pending at its commit), tagged ``request_id``,
    by ``statement`` (this tree's insert_task by default)."""
    params = _task_params(batch, request_id)
    async with conn.transaction(), conn.cursor() as cursor:
        await cursor.executemany(statement or QUERIES["insert_task"], [params] * count)


async def insert_task(conn: Conn, batch: TaskBatch, request_id: str) -> UUID:
    row = await one(conn, QUERIES["insert_task"], _task_params(batch, request_id))
    task_id: UUID = row["id"]
    return task_id


@dataclass
class Waiter:
    """Polls a count of ended items until it reaches a total; fails on a stall."""

    conn: Conn
    query: str
    params: Any
    total: int
    alive: Any = None  # a callable raising BenchError when the system under test died
    polls: int = field(default=0, init=False)

    async def wait(self) -> None:
        last, last_change = -1, time.monotonic()
        while True:
            row = await one(self.conn, self.query, self.params)
            self.polls += 1
            ended, failed = int(row["ended"]), int(row["failed"])
            if failed:
                raise BenchError(f"{failed} of {self.total} items did not succeed")
            if ended >= self.total:
                return
            if ended != last:
                last, last_change = ended, time.monotonic()
            elif time.monotonic() - last_change > STALL_TIMEOUT:
                raise BenchError(
                    f"stalled: {ended} of {self.total} ended, none for {STALL_TIMEOUT:.0f}s"
                )
            if self.alive is not None:
                self.alive()
            await asyncio.sleep(POLL_INTERVAL)


TASKS_ENDED = (
    "SELECT count(*) FILTER (WHERE status = 'completed') AS ended, "
    "count(*) FILTER (WHERE status IN ('failed', 'cancelled')) AS failed "
    "FROM tasks WHERE request_id = %s"
)


# -- procrastinate ------------------------------------------------------------------------


@dataclass
class ProcrastinateEnv:
    """A database with procrastinate's schema, and a worker once started."""

    base_database_url: str
    tag: str
    concurrency: int
    process: subprocess.Popen[bytes] | None = None
    _log_path: Path | None = None
    _created: bool = False

    @property
    def database_name(self) -> str:
        return f"taskgate_bench_{self.tag}_procrastinate"

    @property
    def database_url(self) -> str:
        return with_database(self.base_database_url, self.database_name)

    async def create(self) -> None:
        """Creates the database and applies procrastinate's schema (``apply_schema``)."""
        admin = with_database(self.base_database_url, "postgres")
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            self._created = True
            await conn.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database_name))
            )
        app = make_app(self.database_url, BENCH_APPLICATION)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    def start_worker(self) -> None:
        args = [
            sys.executable, "-m", "bench.procrastinate_app", self.database_url,
            "--concurrency", str(self.concurrency),
        ]  # fmt: skip
        self.process, self._log_path = _spawn(args, dict(os.environ), "procrastinate")

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(
                f"the procrastinate worker exited with {self.process.returncode}:\n"
                + _tail(self._log_path)
            )

    def log_tail(self) -> str:
        return _tail(self._log_path)

    def close(self) -> list[str]:
        problems: list[str] = []
        try:
            _stop(self.process, "the procrastinate worker")
        except Exception as exc:
            problems.append(f"stop procrastinate worker: {exc}")
        if self._created:
            try:
                admin = with_database(self.base_database_url, "postgres")
                with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(self.database_name)
                        )
                    )
            except Exception as exc:
                problems.append(f"drop {self.database_name}: {exc}")
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
        return problems


JOBS_ENDED = (
    "SELECT count(*) FILTER (WHERE status = 'succeeded') AS ended, "
    "count(*) FILTER (WHERE status IN ('failed', 'cancelled', 'aborted')) AS failed "
    "FROM procrastinate_jobs WHERE queue_name = %s"
)
