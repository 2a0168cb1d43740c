"""Throw-away infrastructure for a benchmark run.

A fresh Postgres database (migrated with ``scripts/migrate.sh``), a unique Redis
key prefix, and the server as a subprocess on a free loopback port. Everything
is removed again by :meth:`BenchEnv.close`, whatever happened before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import psycopg
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/taskgate"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class BenchError(RuntimeError):
    """The benchmark itself failed (not merely slow)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead (query string kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (all threads) from /proc, or None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class BenchEnv:
    """A database, a Redis prefix and a running server; ``close`` undoes all three."""

    base_database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    log_level: str = "warning"
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    extra_env: dict[str, str] = field(default_factory=dict)  # TASKGATE_* overrides
    root: Path = (
        ROOT  # the source tree whose migrations and programs run (bench.events: a baseline)
    )
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _log_path: Path | None = None
    _database_created: bool = False

    @property
    def database_name(self) -> str:
        return f"taskgate_bench_{self.tag}"

    @property
    def database_url(self) -> str:
        return with_database(self.base_database_url, self.database_name)

    @property
    def redis_prefix(self) -> str:
        return f"taskgate_bench_{self.tag}:"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- set-up ---------------------------------------------------------------

    def migrate(self) -> None:
        env = {
            **os.environ,
            "TASKGATE_DATABASE_URL": self.database_url,
            "DBMATE": str(Path(sys.executable).parent / "dbmate"),  # a baseline tree has no venv
        }
        self._database_created = True  # dbmate creates it; drop it even if it fails half-way
        result = subprocess.run(
            ["scripts/migrate.sh", "up"], cwd=self.root, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise BenchError(f"migration failed:\n{result.stdout}{result.stderr}")

    def start_server(self) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "TASKGATE_DATABASE_URL": self.database_url,
            "TASKGATE_REDIS_URL": self.redis_url,
            "TASKGATE_REDIS_KEY_PREFIX": self.redis_prefix,
            "TASKGATE_GRPC_ADDR": self.target,
            "TASKGATE_SERVER_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "TASKGATE_LOG_LEVEL": self.log_level,
            "TASKGATE_EMBEDDED_PROCESSOR": "false",
            # Cheap hashing: only one register + one login, not what is measured.
            "TASKGATE_ARGON2_TIME_COST": "1",
            "TASKGATE_ARGON2_MEMORY_KIB": "8192",
            "TASKGATE_ARGON2_PARALLELISM": "1",
            **self.extra_env,
        }
        fd, name = tempfile.mkstemp(prefix="taskgate-bench-server-", suffix=".log")
        self._log_path = Path(name)
        with os.fdopen(fd, "wb") as log_file:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    async def wait_serving(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        last_error = "no answer yet"
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise BenchError(
                        f"server exited with {self.process.returncode} during start-up:\n"
                        + self.server_log_tail()
                    )
                try:
                    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                except grpc.aio.AioRpcError as exc:
                    last_error = f"{exc.code().name}: {exc.details()}"
                else:
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last_error = f"status {response.status}"
                await asyncio.sleep(0.1)
        raise BenchError(
            f"server not SERVING after {within:.0f}s ({last_error}):\n" + self.server_log_tail()
        )

    def server_cpu_seconds(self) -> float | None:
        return None if self.process is None else process_cpu_seconds(self.process.pid)

    def server_log_tail(self, limit: int = 4000) -> str:
        if self._log_path is None:
            return ""
        try:
            data = self._log_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode(errors="replace")

    # -- tear-down ------------------------------------------------------------

    def close(self) -> list[str]:
        """Stops the server, drops the database, deletes the Redis keys; returns problems."""
        problems: list[str] = []
        for step in (self._stop_server, self._drop_database, self._delete_redis_keys):
            try:
                step()
            except Exception as exc:  # report every clean-up failure, then go on
                problems.append(f"{step.__name__.strip('_')}: {exc}")
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None
        return problems

    def _stop_server(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
            raise BenchError("server ignored SIGTERM for 20s; killed it") from None

    def _drop_database(self) -> None:
        if not self._database_created:
            return
        admin_url = with_database(self.base_database_url, "postgres")
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.database_name)
                )
            )

    def _delete_redis_keys(self) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        with contextlib.closing(client):
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.redis_prefix}*", count=500):
                batch.append(key)
                if len(batch) >= 500:
                    client.delete(*batch)
                    batch.clear()
            if batch:
                client.delete(*batch)


def run_bench(
    bench: Coroutine[Any, Any, None],
    *,
    close: Callable[[], list[str]],
    on_failure: Callable[[], str | None] = lambda: None,
) -> int:
    """Runs a benchmark; its exit status: 0, 1 when it (or its clean-up) failed, 130 on Ctrl-C.

    ``close`` undoes its infrastructure and returns what could not be undone;
    ``on_failure`` gives a log tail worth showing when the benchmark failed.
    """
    status = 0
    try:
        asyncio.run(bench)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        status = 1
    except grpc.aio.AioRpcError as exc:
        print(f"bench failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    finally:
        tail = on_failure() if status == 1 else None
        if tail:
            print(tail, file=sys.stderr)
        for problem in close():
            print(f"clean-up failed: {problem}", file=sys.stderr)
            status = status or 1
    return status
