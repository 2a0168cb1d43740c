from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, interval: float = 0.05
) -> bool:
    """Polls ``check`` until it is true; TimeoutError after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - another process changes the state
            await asyncio.sleep(interval)
    return True


async def as_awaitable(value: T) -> T:
    """``value``, for a check that needs no I/O."""
    return value
