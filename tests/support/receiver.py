"""A real aiohttp webhook receiver on 127.0.0.1, recording every request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Answer = Callable[["Received"], int]


@dataclass
class Receiver:
    url: str
    answer: Answer
    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    delay: float = 0.0  # how long each answer takes

    def accepted(self, path: str | None = None) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status <= 299 and path in (None, r.path)]

    async def wait_for(self, check: Callable[[Receiver], bool], within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            while not check(self):
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def receiving(answer: Answer | None = None, *, delay: float = 0.0) -> AsyncIterator[Receiver]:
    """A receiver that answers ``answer(request)`` (200 by default) after ``delay``;
    paths starting with /hang never answer."""
    receiver = Receiver(url="", answer=answer or (lambda _: 200), delay=delay)

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path.startswith("/hang"):
            await asyncio.sleep(3600)
        if receiver.delay:
            await asyncio.sleep(receiver.delay)
        pending = Received(request.path, dict(request.headers), body, 0)
        status = receiver.answer(pending)
        receiver.requests.append(Received(request.path, dict(request.headers), body, status))
        receiver.arrived.set()
        if 300 <= status <= 399:  # a redirect a sender must not follow
            return web.Response(status=status, headers={"Location": "/followed"})
        return web.Response(status=status, text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@asynccontextmanager
async def dispatching(settings: Any, **changes: Any) -> AsyncIterator[Any]:
    """A webhook dispatcher of its own (as ``python -m server.webhooks`` runs one),
    beside a server that runs none."""
    from prometheus_client import CollectorRegistry

    from server.storage.postgres.listener import Listener
    from server.webhooks.metrics import WebhookMetrics
    from server.webhooks.runtime import WebhookRuntime

    settings = settings.model_copy(update=changes)
    listener = Listener(
        conninfo=settings.database_url.get_secret_value(), connect_timeout=settings.db_timeout
    )
    runtime = WebhookRuntime(
        settings, settings, listener=listener, metrics=WebhookMetrics(CollectorRegistry())
    )
    await runtime.start()
    listener.start()
    try:
        yield runtime
    finally:
        await runtime.stop(0.5)
        await listener.stop()
