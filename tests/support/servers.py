from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from server.app import App
from server.config import Settings
from server.passwords import PasswordHasher
from tests.support.clients import Client


@asynccontextmanager
async def serving(
    settings: Settings, *, hasher: PasswordHasher | None = None, **changes: Any
) -> AsyncIterator[tuple[App, Client]]:
    """A real server with ``changes`` applied to ``settings``, and a client of it."""
    app = App(settings.model_copy(update=changes), hasher=hasher)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield app, Client(channel)
    finally:
        await app.stop(grace=0.5)
