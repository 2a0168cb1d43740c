"""One POST to an endpoint, within the guard's limits: a vetted address, no
redirects, short connect and overall timeouts, at most a few KiB of the answer
read."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from server.webhooks.guard import AddressRefused, GuardedResolver, url_problem

OUTCOMES = ("delivered", "http_error", "gone", "timeout", "connection_error", "refused")


@dataclass(frozen=True, slots=True)
class Answer:
    """How a POST went: its outcome (one of OUTCOMES), status, error and time."""

    outcome: str
    http_status: int | None
    error: str | None
    latency: float


class Sender:
    def __init__(
        self,
        *,
        allow_http: bool,
        allow_private: bool,
        connect_timeout: float,
        timeout: float,
        response_max_bytes: int,
        connections: int,
    ) -> None:
        self._allow_http = allow_http
        self._allow_private = allow_private
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, connect=connect_timeout, sock_connect=connect_timeout
        )
        self._max_bytes = response_max_bytes
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(allow_private=self._allow_private), limit=self._connections
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False, trust_env=False
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, payload: bytes, headers: dict[str, str]) -> Answer:
        started = time.perf_counter()

        def answer(outcome: str, status: int | None, error: str | None) -> Answer:
            return Answer(outcome, status, error, time.perf_counter() - started)

        problem = url_problem(url, allow_http=self._allow_http, allow_private=self._allow_private)
        if problem is not None:
            return answer("refused", None, f"refused: the URL {problem}")
        assert self._session is not None, "start() first"
        try:
            async with self._session.post(
                url, data=payload, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(self._max_bytes)
                status = response.status
        except TimeoutError:
            return answer("timeout", None, f"no answer within {self._timeout.total:g}s")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                return answer("refused", None, f"refused: {exc.os_error}")
            return answer("connection_error", None, f"cannot connect: {exc.os_error}")
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            return answer("connection_error", None, f"{type(exc).__name__}: {exc}")
        if 200 <= status <= 299:
            return answer("delivered", status, None)
        return answer("gone" if status == 410 else "http_error", status, f"answered HTTP {status}")
