"""Test harness: a database and a Redis key space of this run's own, on the
real servers named by TASKGATE_TEST_DATABASE_URL / TASKGATE_TEST_REDIS_URL,
dropped afterwards. When those are not set, a local Postgres and Redis of the
run's own are started (devstack: the machine's programs, else the wheels') and
stopped at the end.

- One Postgres database per run, migrated with dbmate; tables are emptied
  before each test that asks for ``database_url``.
- One Redis key prefix per run, and a sub-prefix per test; every key under
  the run's prefix is deleted at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import psycopg
import pytest
import redis
from pydantic import SecretStr

from devstack.around import TEST_TUNING
from devstack.stack import local_databases
from server.app import App
from server.config import Settings

ROOT = Path(__file__).resolve().parent.parent
# Set by pytest_configure, before the test modules that import them are collected.
ADMIN_DATABASE_URL = os.environ.get("TASKGATE_TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("TASKGATE_TEST_REDIS_URL", "")
RUN_ID = secrets.token_hex(4)
_embedded = contextlib.ExitStack()


def pytest_configure(config: pytest.Config) -> None:
    """No URLs given: a throwaway local Postgres and Redis for this run."""
    global ADMIN_DATABASE_URL, TEST_REDIS_URL
    if ADMIN_DATABASE_URL and TEST_REDIS_URL:
        return
    folder = Path(_embedded.enter_context(tempfile.TemporaryDirectory(prefix="taskgate-test-")))
    postgres, redis_server = _embedded.enter_context(
        local_databases(folder, prefer=os.environ.get("TASKGATE_DEV_BINARIES", "machine"),
                        tuning=TEST_TUNING)
    )  # fmt: skip
    ADMIN_DATABASE_URL = ADMIN_DATABASE_URL or postgres.admin_url()
    TEST_REDIS_URL = TEST_REDIS_URL or redis_server.url


def pytest_unconfigure(config: pytest.Config) -> None:
    _embedded.close()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def migrated_database_url() -> Iterator[str]:
    name = f"taskgate_test_{RUN_ID}"
    url = with_database(ADMIN_DATABASE_URL, name)
    subprocess.run(
        [str(ROOT / "scripts" / "migrate.sh"), "up"],
        env={**os.environ, "TASKGATE_DATABASE_URL": url},
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    yield url
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(migrated_database_url: str) -> str:
    """The run's database, emptied for this test."""
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE users, tasks, task_attempts, task_events CASCADE")
    return migrated_database_url


@pytest.fixture(scope="session")
def redis_run_prefix() -> Iterator[str]:
    prefix = f"taskgate-test-{RUN_ID}:"
    yield prefix
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_run_prefix: str) -> str:
    """A key prefix of this test's own."""
    return f"{redis_run_prefix}{secrets.token_hex(4)}:"


@pytest.fixture
def settings(database_url: str, redis_prefix: str) -> Settings:
    """Settings for a server on a free port, with cheap password hashing."""
    return Settings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(TEST_REDIS_URL),
        redis_key_prefix=redis_prefix,
        grpc_addr="127.0.0.1:0",
        metrics_addr="127.0.0.1:0",
        log_level="warning",
        db_timeout=1.0,
        redis_timeout=1.0,
        health_check_interval=0.2,
        shutdown_grace=1.0,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        processor_concurrency=2,
        processor_workers=2,
        processor_poll_interval=1.0,
        task_lease=5.0,
        task_retry_backoff=0.1,
        watch_poll_interval=1.0,
        # Webhook receivers of the tests listen on 127.0.0.1, over http.
        webhook_allow_http=True,
        webhook_allow_private=True,
        webhook_retry_backoff=0.1,
        webhook_poll_interval=1.0,
        webhook_connect_timeout=1.0,
        webhook_timeout=2.0,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    server = App(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0.5)


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as chan:
        yield chan
