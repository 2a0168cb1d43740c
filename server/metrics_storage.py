"""Postgres and Redis metrics, created on a registry passed in.

- ``db_query_duration_seconds{operation, category}`` and
  ``db_query_errors_total{operation, category}``: each statement of
  :class:`~server.storage.postgres.database.Database`, by the name of its query
  in ``queries.sql`` (statements sent in one pipeline are named together:
  ``claim_tasks+claimed_inputs``) and its category (``select``, ``insert``,
  ``update``, ``delete``). The time is what the caller waited: a connection
  from the pool, then the statement. An observation made in a sampled trace
  carries its trace id as an exemplar.
- ``db_pool_connections_idle|in_use|max{pool}`` and ``db_pool_requests_waiting{pool}``:
  read from psycopg_pool's ``get_stats()`` at scrape time (:class:`PoolCollector`).
  The pools are ``api`` (the server's calls) and ``processor`` (a processor's own).
- ``db_reads_total{target, reason}``: where each API read ran (primary or
  replica) and why; ``db_replica_lag_bytes|lag_seconds|in_rotation{replica}``:
  each replica as :class:`~server.storage.postgres.replicas.ReplicaMonitor`
  last saw it (``replica`` is its place in TASKGATE_DATABASE_REPLICA_URLS).
- ``redis_command_duration_seconds{command}`` and ``redis_command_errors_total{command}``:
  each Redis call of the repositories, named by what it does (``session_owner``,
  ``session_create``...): one command, or one pipeline.

An error is a failure the caller sees (unavailable, timed out, or a bug); a
unique violation is an answer, not an error, and a caller that gave up
(cancelled, or its own deadline passed first) is not the store's fault. A
store slower than its own timeout (TASKGATE_DB_TIMEOUT, TASKGATE_REDIS_TIMEOUT)
still is.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool

from taskgate_runtime import telemetry

# A statement on a warm connection takes a fraction of a millisecond; an outage
# ends at the call's time budget (seconds).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Timed:
    """One label value's latency histogram and error counter (children cached)."""

    __slots__ = ("_observe", "failed")

    def __init__(self, duration: Any, errors: Any) -> None:
        self._observe = duration.observe
        self.failed = errors.inc

    def observe(self, seconds: float) -> None:
        self._observe(seconds, telemetry.exemplar())

    @contextmanager
    def timing(self, answers: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
        """Times the block; an exception counts as a failure unless it is one of
        ``answers`` (a unique violation, the caller's own deadline) or a cancellation."""
        started = time.perf_counter()
        try:
            yield
        except answers:
            raise
        except Exception:
            self.failed()
            raise
        finally:
            self.observe(time.perf_counter() - started)


class TimedFamily:
    """A latency histogram and an error counter by one label, e.g. ``operation``."""

    def __init__(
        self, registry: CollectorRegistry, *, prefix: str, label: str | tuple[str, ...], what: str
    ) -> None:
        """``what``: the plural noun counted (``Postgres statements``); ``label``: one
        name (children by a value) or several (children by a tuple of values)."""
        labels = (label,) if isinstance(label, str) else label
        by = " and ".join(labels)
        self._duration = Histogram(
            f"{prefix}_duration_seconds",
            f"Time {what} took, as their callers waited, by {by}.",
            labels, buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self._errors = Counter(
            f"{prefix}_errors",
            f"{what} that failed (unavailable, timed out or unexpected), by {by}.",
            labels, registry=registry,
        )  # fmt: skip
        self._children: dict[str | tuple[str, ...], Timed] = {}

    def __getitem__(self, value: str | tuple[str, ...]) -> Timed:
        timed = self._children.get(value)
        if timed is None:
            values = (value,) if isinstance(value, str) else value
            timed = Timed(self._duration.labels(*values), self._errors.labels(*values))
            self._children[value] = timed
        return timed


class PoolCollector(Collector):
    """The connection pools' gauges, read from ``get_stats()`` when scraped."""

    _FAMILIES = (
        ("db_pool_connections_idle", "Connections open and idle in the pool."),
        ("db_pool_connections_in_use", "Connections lent out (or being opened) by the pool."),
        ("db_pool_connections_max", "The most connections the pool may open."),
        ("db_pool_requests_waiting", "Callers waiting for a connection from the pool."),
    )

    def __init__(self) -> None:
        self._pools: dict[str, AsyncConnectionPool] = {}

    def add(self, name: str, pool: AsyncConnectionPool) -> None:
        self._pools[name] = pool

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families())

    def collect(self) -> Iterable[GaugeMetricFamily]:
        idle, in_use, maximum, waiting = families = list(self._families())
        for name, pool in self._pools.items():
            stats = pool.get_stats()
            available = stats.get("pool_available", 0)
            idle.add_metric([name], available)
            in_use.add_metric([name], max(0, stats.get("pool_size", 0) - available))
            maximum.add_metric([name], stats.get("pool_max", 0))
            waiting.add_metric([name], stats.get("requests_waiting", 0))
        return families

    def _families(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation in self._FAMILIES:
            yield GaugeMetricFamily(name, documentation, labels=["pool"])


class DatabaseMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = TimedFamily(
            registry,
            prefix="db_query",
            label=("operation", "category"),
            what="Postgres statements",
        )
        self.pools = PoolCollector()
        registry.register(self.pools)


class RedisMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.commands = TimedFamily(
            registry, prefix="redis_command", label="command", what="Redis calls"
        )


class ReplicaCollector(Collector):
    """Each replica's lag and place in the rotation, read from the monitor when scraped."""

    _FAMILIES = (
        ("db_replica_lag_bytes", "WAL the primary has written that the replica has not replayed."),
        ("db_replica_lag_seconds", "How long ago the primary wrote WAL the replica lacks."),
        ("db_replica_in_rotation", "1 while the replica serves reads, 0 while it is out."),
    )

    def __init__(self) -> None:
        self._replicas: list[Any] = []

    def add(self, replica: Any) -> None:
        """``replica`` has ``name``, ``lag_bytes``, ``lag_seconds`` and ``in_rotation``."""
        self._replicas.append(replica)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families())

    def collect(self) -> Iterable[GaugeMetricFamily]:
        lag_bytes, lag_seconds, in_rotation = families = list(self._families())
        for replica in self._replicas:
            lag_bytes.add_metric([replica.name], replica.lag_bytes)
            lag_seconds.add_metric([replica.name], replica.lag_seconds)
            in_rotation.add_metric([replica.name], 1.0 if replica.in_rotation else 0.0)
        return families

    def _families(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation in self._FAMILIES:
            yield GaugeMetricFamily(name, documentation, labels=["replica"])


class ReadMetrics:
    """``db_reads_total{target, reason}``: where each routed read ran, and why there."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reads = Counter(
            "db_reads",
            "Reads of the API, by where they ran (primary or replica) and why: fresh (a "
            "replica had replayed the caller's position), no_replica (none configured), "
            "down (none in rotation, or it failed), stale (behind the caller), latest "
            "(the read must see the latest commit).",
            ["target", "reason"],
            registry=registry,
        )
        self.replicas = ReplicaCollector()
        registry.register(self.replicas)
        self._children: dict[tuple[str, str], Any] = {}

    def counted(self, target: str, reason: str) -> None:
        child = self._children.get((target, reason))
        if child is None:
            child = self._children[(target, reason)] = self.reads.labels(target, reason)
        child.inc()
