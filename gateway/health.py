"""Readiness: the server's overall grpc.health.v1 status, followed with ``Watch``.

One long-lived Watch stream over the shared channel keeps :attr:`serving`
current; when the stream fails (the server is down or restarting) the gateway
is not ready, and the watch starts again after a short, growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING


class HealthWatcher:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        service: str = "",
        min_backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        self._stub = health_pb2_grpc.HealthStub(channel)
        self._service = service
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.serving = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-health-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_changed(self) -> None:
        """Returns at the next change of :attr:`serving` (for tests and start-up)."""
        self._changed.clear()
        await self._changed.wait()

    def _set(self, serving: bool) -> None:
        if serving != self.serving:
            self.serving = serving
            log.log(
                logging.INFO if serving else logging.WARNING,
                "upstream is %s",
                "SERVING" if serving else "not serving",
                extra={"fields": {"serving": serving}},
            )
        self._changed.set()

    async def _run(self) -> None:
        backoff = self._min_backoff
        while True:
            try:
                call = self._stub.Watch(health_pb2.HealthCheckRequest(service=self._service))
                async for response in call:
                    self._set(response.status == SERVING)
                    backoff = self._min_backoff
            except grpc.aio.AioRpcError as exc:
                log.debug("health watch ended: %s", exc.code().name)
            self._set(False)
            await asyncio.sleep(backoff)
            backoff = min(self._max_backoff, backoff * 2)
