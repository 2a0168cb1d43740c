"""One LISTEN connection per process, its notifications fanned out in memory.

Watchers and the processor subscribe to channels; however many there are,
the process holds one extra Postgres connection. When the connection drops,
the listener reconnects with a growing delay and then tells every reconnect
callback, since notifications sent in between are lost: subscribers re-read
what they follow (and poll slowly in any case).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

Callback = Callable[[str], None]


class Listener:
    def __init__(self, *, conninfo: str, connect_timeout: float, retry_max: float = 5.0) -> None:
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._retry_max = retry_max
        self._subscribers: defaultdict[str, list[Callback]] = defaultdict(list)
        self._on_reconnect: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def subscribe(self, channel: str, callback: Callback) -> None:
        """Calls ``callback(payload)`` for each notification on ``channel`` (before start)."""
        if self._task is not None:
            raise RuntimeError("subscribe before the listener starts")
        self._subscribers[channel].append(callback)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Calls ``callback()`` after each reconnection (notifications may have been missed)."""
        self._on_reconnect.append(callback)

    def start(self) -> None:
        if self._subscribers and self._task is None:
            self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=max(1, round(self._connect_timeout)),
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                )
            except (psycopg.Error, OSError) as exc:
                self.connected.clear()
                log.warning("cannot connect to listen for notifications: %s", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(self._retry_max, delay * 2)
                continue
            delay = 0.1
            try:
                await self._listen(conn)
            except (psycopg.Error, OSError) as exc:
                log.warning("notification connection lost: %s", type(exc).__name__)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _listen(self, conn: psycopg.AsyncConnection[object]) -> None:
        for channel in self._subscribers:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self.connected.set()
        for announce in self._on_reconnect:  # anything sent before now was missed
            announce()
        async for notify in conn.notifies():
            for callback in self._subscribers.get(notify.channel, ()):
                callback(notify.payload)
