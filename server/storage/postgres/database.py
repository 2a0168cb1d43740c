"""The Postgres connection pool and the one place psycopg errors are translated.

Every statement runs under a time budget (the configured timeout, or less when
the caller's deadline is nearer), so an unreachable or stalled database is an
UNAVAILABLE answer, never a hung call.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from server.context import time_budget
from server.storage.errors import StorageUnavailable, UniqueViolation
from server.storage.postgres.queries import QUERIES

T = TypeVar("T")
Params = Mapping[str, Any]


def create_pool(
    conninfo: str, *, min_size: int, max_size: int, timeout: float
) -> AsyncConnectionPool:
    """A pool that is opened later (``await pool.open(wait=False)``) by the app."""
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=timeout,
        name="taskgate",
        kwargs={"autocommit": True, "connect_timeout": max(1, math.ceil(timeout))},
    )


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """psycopg and pool errors → storage errors, once, here."""
    try:
        yield
    except pg_errors.UniqueViolation as exc:
        raise UniqueViolation(exc.diag.constraint_name) from exc
    except (PoolTimeout, TimeoutError) as exc:
        raise StorageUnavailable("the database did not answer in time") from exc
    except (psycopg.OperationalError, pg_errors.AdminShutdown, OSError) as exc:
        raise StorageUnavailable("the database is unavailable") from exc


class Database:
    """Runs the named queries of ``queries.sql`` on the pool."""

    def __init__(self, *, pool: AsyncConnectionPool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    async def fetch_one(self, query: str, params: Params, row: type[T]) -> T | None:
        budget = time_budget(self._timeout)
        async with (
            translate_errors(),
            asyncio.timeout(budget),
            self._pool.connection(timeout=budget) as conn,
        ):
            cursor = conn.cursor(row_factory=class_row(row))
            await cursor.execute(QUERIES[query], params)
            return await cursor.fetchone()

    async def execute(self, query: str, params: Params) -> int:
        """Runs a statement; returns the number of rows it touched."""
        budget = time_budget(self._timeout)
        async with (
            translate_errors(),
            asyncio.timeout(budget),
            self._pool.connection(timeout=budget) as conn,
        ):
            cursor = await conn.execute(QUERIES[query], params)
            return cursor.rowcount

    async def ping(self) -> None:
        await self.execute("ping", {})
