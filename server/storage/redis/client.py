"""The Redis client and the one place redis errors are translated (and calls timed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from opentelemetry.util.types import AttributeValue
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from server.context import time_budget
from server.errors import DeadlineExceeded
from server.metrics_storage import RedisMetrics, Timed
from server.storage.errors import StorageUnavailable, timed_out
from server.storage.redis.keys import RedisKeys
from taskgate_runtime import telemetry

_ANSWERS = (DeadlineExceeded,)  # the caller's own deadline passed: not the store's fault


def create_client(url: str, *, timeout: float, pool_size: int = 64) -> Redis:
    """A client on a pool of at most ``pool_size`` connections.

    A burst of calls queues for a connection instead of opening one each (a
    thousand streams' worth of connect handshakes at once outlast their time
    budget on a busy machine); the wait counts in each call's budget.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=None,  # redis_call's time budget bounds the wait
        decode_responses=True,
        # Every call runs inside redis_call's time budget, which cancels a stalled
        # read (the client then drops that connection); a second per-read timer
        # would only cost time on the hot path.
        socket_timeout=None,
        socket_connect_timeout=timeout,
        # One immediate retry replaces a connection the server closed; an outage
        # is reported at once instead of being retried past the caller's budget.
        retry=Retry(NoBackoff(), 1),
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


# What each call of the repositories sends, for its span's db.operation.name: the
# command, or BATCH for a pipeline (or a command and a pipeline).
OPERATIONS = {
    "session_create": "BATCH",
    "session_get": "HGETALL",
    "session_owner": "HMGET",
    "session_delete": "BATCH",
    "sessions_delete_all": "BATCH",
    "counter_refund": "EVALSHA",
    "counter_hit": "BATCH",
    "counter_read": "BATCH",
    "ping": "PING",
    "device_token_get": "GET",
    "device_token_set": "BATCH",
    "device_token_delete": "DEL",
    "wal_position_get": "GET",
    "wal_position_advance": "EVALSHA",
}


def span_attributes(redis: Redis, call: str) -> dict[str, AttributeValue]:
    """The attributes of a Redis call's span (stable database semantic conventions):
    the command and the server; never a key or a value (keys hold session ids)."""
    kwargs = redis.connection_pool.connection_kwargs
    attributes: dict[str, AttributeValue] = {
        "db.system.name": "redis",
        "db.operation.name": OPERATIONS.get(call, "BATCH"),
        "db.namespace": str(kwargs.get("db", 0)),
        "taskgate.redis.call": call,
    }
    if host := kwargs.get("host"):
        attributes["server.address"] = str(host)
        attributes["server.port"] = int(kwargs.get("port", 6379))
    return attributes


@asynccontextmanager
async def redis_call(
    limit: float, timed: Timed | None, span: Mapping[str, AttributeValue]
) -> AsyncIterator[None]:
    """Bound a Redis call by the time budget; connection trouble → StorageUnavailable.

    ``timed`` (a :class:`~server.metrics_storage.RedisMetrics` command) records
    the call's duration, and its failure; ``span`` (:func:`span_attributes`)
    traces it when the call is traced.
    """
    with telemetry.client_span(str(span["db.operation.name"]), span, answers=_ANSWERS):
        if timed is None:
            async with _translated(limit):
                yield
            return
        with timed.timing(_ANSWERS):
            async with _translated(limit):
                yield


@asynccontextmanager
async def _translated(limit: float) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(time_budget(limit)):
            yield
    except (TimeoutError, redis_errors.TimeoutError) as exc:
        raise timed_out("redis") from exc
    except (redis_errors.ConnectionError, redis_errors.BusyLoadingError, OSError) as exc:
        raise StorageUnavailable("redis is unavailable") from exc


class RedisRepository:
    """The base of the Redis repositories: the client, the key names, and each call's
    time budget and timing (:meth:`_call`)."""

    def __init__(
        self,
        *,
        redis: Redis,
        keys: RedisKeys,
        timeout: float,
        metrics: RedisMetrics | None = None,
    ) -> None:
        """``metrics`` times each call, by the names given to :meth:`_call`."""
        self._redis = redis
        self._keys = keys
        self._timeout = timeout
        self._metrics = metrics
        self._spans: dict[str, dict[str, AttributeValue]] = {}

    def _call(self, command: str) -> AbstractAsyncContextManager[None]:
        """The time budget (and timing and span, as ``command``) of one Redis call or
        pipeline."""
        timed: Timed | None = None if self._metrics is None else self._metrics.commands[command]
        span = self._spans.get(command)
        if span is None:
            span = self._spans[command] = span_attributes(self._redis, command)
        return redis_call(self._timeout, timed, span)
