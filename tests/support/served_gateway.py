"""A real gateway on a real socket, run exactly as ``python -m gateway`` runs it
(:func:`gateway.serving.start_site`), in front of a server of the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import grpc

from gateway.app import GATEWAY_KEY, Gateway, create_app
from gateway.config import Settings
from gateway.serving import start_site
from server.app import App


@dataclass
class ServedGateway:
    gateway: Gateway
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def served_gateway(app: App, settings: Settings) -> AsyncIterator[ServedGateway]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        web_app = create_app(settings, channel)
        runner = await start_site(web_app, "127.0.0.1:0", header_timeout=settings.header_timeout)
        try:
            gateway = web_app[GATEWAY_KEY]
            assert isinstance(gateway, Gateway)
            served = ServedGateway(gateway, int(runner.addresses[0][1]))
            await _ready(served.base)
            yield served
        finally:
            await runner.cleanup()


async def _ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            async with session.get(f"{base}/ready") as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.02)
    raise AssertionError("the gateway never became ready")
