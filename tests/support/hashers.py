"""Password hashers that the tests can hold at a point, to make races deterministic."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from server.config import Settings
from server.passwords import PasswordHasher


def cheap(settings: Settings, **kwargs: Any) -> dict[str, Any]:
    return {
        "time_cost": settings.argon2_time_cost,
        "memory_kib": settings.argon2_memory_kib,
        "parallelism": settings.argon2_parallelism,
        **kwargs,
    }


class GatedHasher(PasswordHasher):
    """``verify`` stops before it returns until the gate opens (it starts open)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**cheap(settings, **kwargs))
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def verify(self, password_hash: str | None, password: str, **lane: Any) -> bool:
        result = await super().verify(password_hash, password, **lane)
        self.entered.set()
        await self.gate.wait()
        return result


class BlockingHasher(PasswordHasher):
    """Each hash holds its pool thread until ``release`` is set: a saturated pool.
    ``order`` lists the passwords in the order their hashes ran."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**cheap(settings, **kwargs))
        self.release = threading.Event()
        self.order: list[str] = []

    def _verify(self, password_hash: str | None, password: str) -> bool:
        self.release.wait(timeout=20)
        self.order.append(password)
        return super()._verify(password_hash, password)

    def _hash(self, password: str) -> str:
        self.release.wait(timeout=20)
        self.order.append(password)
        return super()._hash(password)


class SteadyHasher(PasswordHasher):
    """Every hash holds its thread ``seconds`` (a busy machine's argon2)."""

    def __init__(self, settings: Settings, seconds: float, **kwargs: Any) -> None:
        super().__init__(**cheap(settings, **kwargs))
        self._seconds = seconds

    def _hash(self, password: str) -> str:
        time.sleep(self._seconds)
        return super()._hash(password)


class SlowHasher(PasswordHasher):
    """Every verification takes ``delay`` seconds longer."""

    def __init__(self, settings: Settings, delay: float) -> None:
        super().__init__(**cheap(settings))
        self._delay = delay

    async def verify(self, password_hash: str | None, password: str, **lane: Any) -> bool:
        await asyncio.sleep(self._delay)
        return await super().verify(password_hash, password, **lane)


__all__ = ["BlockingHasher", "GatedHasher", "SlowHasher", "SteadyHasher"]
