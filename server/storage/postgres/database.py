"""The Postgres connection pool and the one place psycopg errors are translated.

Every statement runs under a time budget (the configured timeout, or less when
the caller's deadline is nearer), so an unreachable or stalled database is an
UNAVAILABLE answer, never a hung call.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from opentelemetry.util.types import AttributeValue
from psycopg import AsyncConnection
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import kwargs_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from server.context import time_budget
from server.errors import DeadlineExceeded
from server.metrics_storage import DatabaseMetrics
from server.storage.errors import StorageUnavailable, UniqueViolation, timed_out
from server.storage.postgres.queries import QUERIES, category
from taskgate_runtime import telemetry

log = logging.getLogger(__name__)
T = TypeVar("T")
Params = Mapping[str, Any]
# An answer, or the caller's own deadline: not the store's fault.
_ANSWERS = (UniqueViolation, DeadlineExceeded)


def _server_attributes(conninfo: str) -> dict[str, AttributeValue]:
    """``db.namespace``, ``server.address`` and ``server.port`` of a DSN (nothing else of it:
    it may hold a password)."""
    if not conninfo:
        return {}
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return {}
    attributes: dict[str, AttributeValue] = {}
    if dbname := parts.get("dbname"):
        attributes["db.namespace"] = str(dbname)
    host = str(parts.get("host") or "")
    if host and "," not in host and not host.startswith("/"):
        attributes["server.address"] = host
        port = str(parts.get("port") or "5432")
        if port.isdigit():
            attributes["server.port"] = int(port)
    return attributes


def create_pool(
    conninfo: str,
    *,
    min_size: int,
    max_size: int,
    timeout: float,
    reconnect_timeout: float,
    name: str = "taskgate",
    check_on_checkout: bool = True,
    settings: Mapping[str, str] | None = None,
) -> AsyncConnectionPool:
    """A pool that is opened later (``await pool.open(wait=False)``) by the app.

    psycopg_pool retries a failed connection with a doubling delay (1, 2, 4, 8 s…)
    until ``reconnect_timeout``; calls meanwhile wait for that schedule, so after a
    long outage the pool stayed empty for up to the last delay (13-17 s seen).
    A short ``reconnect_timeout`` gives the attempt up early instead, and the next
    call (or health probe) starts a fresh one at once. Connections are checked
    on checkout, so one broken by the outage is replaced, not handed out
    (unless ``check_on_checkout`` is off: the check costs a round trip each time).
    ``settings`` are Postgres settings for every connection (libpq ``options``).
    """
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": max(1, math.ceil(timeout))}
    if settings:
        kwargs["options"] = " ".join(f"-c {key}={value}" for key, value in settings.items())
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=timeout,
        reconnect_timeout=reconnect_timeout,
        check=AsyncConnectionPool.check_connection if check_on_checkout else None,
        name=name,
        kwargs=kwargs,
    )


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """psycopg and pool errors → storage errors, once, here."""
    try:
        yield
    except pg_errors.UniqueViolation as exc:
        raise UniqueViolation(exc.diag.constraint_name) from exc
    except (PoolTimeout, TimeoutError) as exc:
        raise timed_out("the database") from exc
    except (psycopg.OperationalError, pg_errors.AdminShutdown, OSError) as exc:
        raise StorageUnavailable("the database is unavailable") from exc


class Database:
    """Runs the named queries of ``queries.sql`` on the pool.

    Each statement runs in a task of its own that the caller waits for at most
    its time budget. Past it the caller gets UNAVAILABLE at once, while the
    task is cancelled in the background: psycopg then spends up to ten seconds
    asking a hung server to cancel the query before it drops the connection,
    and no caller should wait for that.
    """

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        timeout: float,
        metrics: DatabaseMetrics | None = None,
    ) -> None:
        """``metrics`` times each statement by its query name."""
        self._pool = pool
        self._timeout = timeout
        self._metrics = metrics
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._server = _server_attributes(pool.conninfo if isinstance(pool.conninfo, str) else "")
        self._span_attributes: dict[str, dict[str, AttributeValue]] = {}

    async def fetch_one(
        self, query: str, params: Params, row: Callable[..., T], *, binary: bool = False
    ) -> T | None:
        """The first row, built by ``row(**columns)`` (a dataclass or a function).

        ``binary`` asks for the row in binary format: for image bytes, which
        would otherwise travel hex-encoded (twice the size, and decoded here).
        """

        async def run(conn: AsyncConnection[Any]) -> T | None:
            cursor = conn.cursor(row_factory=kwargs_row(row), binary=binary)
            await cursor.execute(QUERIES[query], params)
            return await cursor.fetchone()

        return await self._run(query, run)

    async def fetch_all(
        self, query: str, params: Params, row: Callable[..., T], *, binary: bool = False
    ) -> list[T]:
        """Every row, each built by ``row(**columns)`` (in binary format with ``binary``)."""

        async def run(conn: AsyncConnection[Any]) -> list[T]:
            cursor = conn.cursor(row_factory=kwargs_row(row), binary=binary)
            await cursor.execute(QUERIES[query], params)
            return await cursor.fetchall()

        return await self._run(query, run)

    async def fetch_all_pipelined(
        self,
        statements: Sequence[tuple[str, Params, Callable[..., Any]]],
        *,
        binary: bool = False,
        extra_time: float = 0.0,
    ) -> list[list[Any]]:
        """Runs statements in one round trip (libpq pipeline mode) and one transaction
        (a single Sync ends the pipeline: a failing statement undoes them all); returns
        each one's rows (in binary format with ``binary``). ``extra_time`` seconds are
        added to the time budget: for statements that carry megabytes."""

        async def run(conn: AsyncConnection[Any]) -> list[list[Any]]:
            cursors = []
            async with conn.pipeline():
                for query, params, row in statements:
                    cursor = conn.cursor(row_factory=kwargs_row(row), binary=binary)
                    await cursor.execute(QUERIES[query], params)
                    cursors.append(cursor)
            return [await cursor.fetchall() for cursor in cursors]

        return await self._run("+".join(query for query, _, _ in statements), run, extra_time)

    async def execute(self, query: str, params: Params) -> int:
        """Runs a statement; returns the number of rows it touched."""

        async def run(conn: AsyncConnection[Any]) -> int:
            cursor = await conn.execute(QUERIES[query], params)
            return cursor.rowcount

        return await self._run(query, run)

    async def ping(self) -> None:
        await self.execute("ping", {})

    async def close(self) -> None:
        """Waits for the statements given up on to be cleaned away, then closes the pool."""
        for task in list(self._abandoned):
            task.cancel()  # a second cancellation: psycopg closes the connection at once
        await asyncio.gather(*self._abandoned, return_exceptions=True)
        await self._pool.close()

    async def _run(
        self,
        operation: str,
        statement: Callable[[AsyncConnection[Any]], Awaitable[T]],
        extra_time: float = 0.0,
    ) -> T:
        """Runs ``statement`` under its time budget, timed as ``operation`` (and traced as
        it, when the call is: :func:`taskgate_runtime.telemetry.client_span`)."""
        attributes = self._attributes(operation)
        summary = attributes["db.query.summary"]
        with telemetry.client_span(str(summary), attributes, answers=_ANSWERS):
            if self._metrics is None:
                return await self._within_budget(statement, extra_time)
            with self._metrics.queries[operation, category(operation)].timing(_ANSWERS):
                return await self._within_budget(statement, extra_time)

    def _attributes(self, operation: str) -> dict[str, AttributeValue]:
        """The database span's attributes (stable semantic conventions): the statement's
        text, never its parameters. The span is named by ``db.query.summary``: the
        statement's category and the query's name in ``queries.sql`` (``SELECT get_task``;
        statements pipelined together are joined by ``+``)."""
        attributes = self._span_attributes.get(operation)
        if attributes is None:
            names = operation.split("+")
            attributes = {
                "db.system.name": "postgresql",
                **self._server,
                "db.operation.name": category(operation).upper(),
                "db.query.summary": f"{category(operation).upper()} {operation}",
                "db.query.text": ";\n".join(QUERIES[name].as_string() for name in names),
            }
            if len(names) > 1:
                attributes["db.operation.batch.size"] = len(names)
            self._span_attributes[operation] = attributes
        return attributes

    async def _within_budget(
        self, statement: Callable[[AsyncConnection[Any]], Awaitable[T]], extra_time: float = 0.0
    ) -> T:
        budget = time_budget(self._timeout + extra_time)
        task = asyncio.create_task(self._on_connection(statement, budget))
        waited = False
        try:
            async with translate_errors():
                done, _ = await asyncio.wait((task,), timeout=budget)
                if not done:
                    raise TimeoutError
                waited = True
                return task.result()
        finally:
            if not waited:  # even if it finished just now: its outcome is still to retrieve
                self._abandon(task)

    async def _on_connection(
        self, statement: Callable[[AsyncConnection[Any]], Awaitable[T]], budget: float
    ) -> T:
        async with self._pool.connection(timeout=budget) as conn:
            return await statement(conn)

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        """Drops a statement given up on, retrieving its outcome: nobody waits for it,
        and a PoolTimeout there is the caller's deadline, not a server error."""
        self._abandoned.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.debug("a statement given up on ended with %r", error)
