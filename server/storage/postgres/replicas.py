"""Reads on streaming replicas, without a caller ever reading older data than
they wrote or have already seen.

Positions are byte offsets in the primary's WAL. Each user has one, in Redis
(:class:`~server.storage.redis.positions.WalPositions`):

- after the user's write commits, it is raised to the primary's WAL insert
  position (:meth:`ReadRouter.wrote`): at or past that write's commit record;
- after each read, it is raised to the position the answer was read at: a
  replica's replay position just after the read, or the primary's insert
  position just after it.

A read goes to a replica only when that replica had replayed the user's
position *before* the read began: one pipelined round trip asks the replay
position, runs the read, and asks it again, in that order. When it had not
(stale), or the replica is out of rotation (down, or lagging past
``max_lag``), or fails, the read runs on the primary instead, with no error
to the caller. So every answer is at least as new as the user's last write
and last answer (read-your-writes and monotonic reads), whichever server
gave it. Replay never goes backwards, so a status the processor wrote, once
seen, is never followed by an older one.

Reads that must see the latest commit (``latest=True``: the login's check that
the user still exists, a watcher woken by a notification, whose commit has no
known position) go to the primary.

:class:`ReplicaMonitor` samples every replica (and the primary's position)
each ``interval``: a replica that does not answer, is not replaying, or lags
by more than ``max_lag`` leaves the rotation until it recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from server.metrics_storage import DatabaseMetrics
from server.storage.errors import StorageUnavailable
from server.storage.postgres.database import Database, Params, create_pool
from server.storage.redis.positions import WalPositions

log = logging.getLogger(__name__)
T = TypeVar("T")

PRIMARY, REPLICA = "primary", "replica"
WAIT_STEP = 0.002  # how often a waiting read asks the replica again
# Why a read went where it went (the ``reason`` label of the reads counter).
NO_REPLICA, DOWN, STALE, LATEST, FRESH = "no_replica", "down", "stale", "latest", "fresh"


@dataclass(frozen=True, slots=True)
class Position:
    position: int


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    in_recovery: bool
    replayed: int


@dataclass(slots=True)
class Replica:
    """One replica: its pool, and what the monitor last saw of it."""

    name: str
    pool: AsyncConnectionPool
    database: Database
    in_rotation: bool = False
    replayed: int = 0
    lag_bytes: int = 0
    lag_seconds: float = 0.0
    why_out: str = "not checked yet"

    def leave(self, why: str) -> None:
        if self.in_rotation:
            log.warning("replica %s leaves the rotation: %s", self.name, why)
        self.in_rotation, self.why_out = False, why

    def join(self) -> None:
        if not self.in_rotation:
            log.info("replica %s is in rotation", self.name)
        self.in_rotation, self.why_out = True, ""


class ReadRouter:
    """Where each read runs: a fresh enough replica, else the primary."""

    def __init__(
        self,
        *,
        primary: Database,
        replicas: Sequence[Replica] = (),
        positions: WalPositions | None = None,
        counted: Callable[[str, str], None] | None = None,
        wait: float = 0.0,
    ) -> None:
        """``counted(target, reason)`` is told of every read (the reads metric); a read a
        replica is too stale for waits up to ``wait`` seconds for it before the primary."""
        self.primary = primary
        self._wait = wait
        self.replicas = tuple(replicas)
        self._positions = positions
        self._counted = counted or (lambda target, reason: None)
        self._turn = itertools.count()

    @property
    def routing(self) -> bool:
        return bool(self.replicas) and self._positions is not None

    async def fetch_one(
        self,
        caller: UUID | None,
        query: str,
        params: Params,
        row: Callable[..., T],
        *,
        binary: bool = False,
        latest: bool = False,
    ) -> T | None:
        rows = await self._read(caller, query, params, row, binary=binary, latest=latest)
        return rows[0] if rows else None

    async def fetch_all(
        self, caller: UUID | None, query: str, params: Params, row: Callable[..., T]
    ) -> list[T]:
        return await self._read(caller, query, params, row, binary=False, latest=False)

    async def wrote(self, caller: UUID) -> None:
        """After ``caller``'s write committed: their reads must see it from now on."""
        if not self.routing:
            return
        found = await self.primary.fetch_one("wal_position", {}, Position)
        if found is not None:
            await self._advance(caller, found.position)

    async def _read(
        self,
        caller: UUID | None,
        query: str,
        params: Params,
        row: Callable[..., T],
        *,
        binary: bool,
        latest: bool,
    ) -> list[T]:
        if not self.routing:
            self._counted(PRIMARY, NO_REPLICA)
            return await self.primary.fetch_all(query, params, row, binary=binary)
        if latest:
            return await self._on_primary(caller, LATEST, query, params, row, binary)
        required = await self._required(caller)
        deadline = asyncio.get_running_loop().time() + self._wait
        while True:
            reason, rows = await self._on_replicas(caller, required, query, params, row, binary)
            if rows is not None:
                return rows
            pause = min(WAIT_STEP, deadline - asyncio.get_running_loop().time())
            if reason != STALE or pause <= 0:
                return await self._on_primary(caller, reason, query, params, row, binary)
            await asyncio.sleep(pause)

    async def _on_replicas(
        self,
        caller: UUID | None,
        required: int,
        query: str,
        params: Params,
        row: Callable[..., T],
        binary: bool,
    ) -> tuple[str, list[T] | None]:
        """The rows from a replica that had replayed ``required``; else why none could."""
        reason = DOWN
        for replica in self._candidates(required):
            try:
                before, rows, after = await replica.database.fetch_all_pipelined(
                    [("replay_position", {}, Position), (query, params, row),
                     ("replay_position", {}, Position)],
                    binary=binary,
                )  # fmt: skip
            except StorageUnavailable as exc:
                replica.leave(f"a read failed: {exc}")
                continue
            if before[0].position < required:
                reason = STALE
                continue
            self._counted(REPLICA, FRESH)
            if caller is not None and after[0].position > required:
                await self._advance(caller, after[0].position)
            return FRESH, rows
        return reason, None

    def _candidates(self, required: int) -> list[Replica]:
        """The replicas in rotation, those known to have replayed ``required`` first, the
        load spread by turns. One known to be behind is still asked: it may have caught up
        since the monitor looked, and asking costs a round trip on it, not on the primary."""
        rotation = [r for r in self.replicas if r.in_rotation]
        if not rotation:
            return []
        start = next(self._turn) % len(rotation)
        turned = rotation[start:] + rotation[:start]
        return sorted(turned, key=lambda r: r.replayed < required)[:2]

    async def _on_primary(
        self,
        caller: UUID | None,
        reason: str,
        query: str,
        params: Params,
        row: Callable[..., T],
        binary: bool,
    ) -> list[T]:
        self._counted(PRIMARY, reason)
        if caller is None:
            return await self.primary.fetch_all(query, params, row, binary=binary)
        rows, after = await self.primary.fetch_all_pipelined(
            [(query, params, row), ("wal_position", {}, Position)], binary=binary
        )
        await self._advance(caller, after[0].position)
        return rows

    async def _required(self, caller: UUID | None) -> int:
        if caller is None or self._positions is None:
            return 0
        return await self._positions.get(caller)

    async def _advance(self, caller: UUID, position: int) -> None:
        if self._positions is not None:
            await self._positions.advance(caller, position)


class ReplicaMonitor:
    """Samples each replica every ``interval``; takes it out of rotation and back.

    A replica's lag in seconds is how long ago the primary had written WAL the
    replica has still not replayed, read off the primary's positions sampled each
    round (so it is 0 on an idle primary, whatever the age of the last commit,
    and needs no clock of the replica's).
    """

    def __init__(
        self,
        *,
        primary: Database,
        replicas: Sequence[Replica],
        interval: float,
        max_lag: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._primary = primary
        self._replicas = tuple(replicas)
        self._interval = interval
        self._max_lag = max_lag
        self._clock = clock or time.monotonic
        self._written: deque[tuple[float, int]] = deque()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._replicas and self._task is None:
            self._task = asyncio.create_task(self._run(), name="replica-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval)

    async def check(self) -> None:
        """One sample of the primary's position and of every replica."""
        now = self._clock()
        try:
            found = await self._primary.fetch_one("wal_written_position", {}, Position)
        except StorageUnavailable:
            found = None  # no new sample: the lags are judged on the ones before
        if found is not None:
            self._written.append((now, found.position))
        horizon = now - 2 * self._max_lag - self._interval
        while len(self._written) > 1 and self._written[0][0] < horizon:
            self._written.popleft()
        await asyncio.gather(*(self._check(replica, now) for replica in self._replicas))

    def _lag(self, replayed: int, now: float) -> tuple[int, float]:
        """Bytes and seconds behind the primary, by its sampled positions."""
        if not self._written:
            return 0, 0.0
        latest = self._written[-1][1]
        if replayed >= latest:
            return 0, 0.0
        since = next(t for t, position in self._written if position > replayed)
        return latest - replayed, max(0.0, now - since)

    async def _check(self, replica: Replica, now: float) -> None:
        try:
            status = await replica.database.fetch_one("replica_status", {}, ReplicaStatus)
        except StorageUnavailable as exc:
            replica.leave(f"down: {exc}")
            return
        assert status is not None  # a SELECT without FROM returns its row
        if not status.in_recovery:
            replica.leave("not a replica (it is not replaying WAL)")
            return
        replica.replayed = status.replayed
        replica.lag_bytes, replica.lag_seconds = self._lag(status.replayed, now)
        if replica.lag_seconds > self._max_lag:
            replica.leave(f"{replica.lag_seconds:.0f}s behind (more than {self._max_lag:.0f}s)")
            return
        replica.join()


def open_replicas(
    urls: Sequence[str],
    *,
    pool_size: int,
    timeout: float,
    reconnect_timeout: float,
    metrics: DatabaseMetrics | None = None,
) -> list[Replica]:
    """A pool of its own per replica (not opened yet), named by its place in ``urls``.

    The pools skip the check on checkout: a broken connection fails its read,
    which then runs on the primary, and the replica leaves the rotation until the
    monitor sees it answer again.
    """
    replicas = []
    for index, url in enumerate(urls):
        name = str(index)
        pool = create_pool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,
            reconnect_timeout=reconnect_timeout,
            name=f"taskgate-replica-{name}",
            check_on_checkout=False,
        )
        if metrics is not None:
            metrics.pools.add(f"replica-{name}", pool)
        database = Database(pool=pool, timeout=timeout, metrics=metrics)
        replicas.append(Replica(name=name, pool=pool, database=database))
    return replicas
