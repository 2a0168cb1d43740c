"""Password hashing with argon2id, off the event loop, in a bounded pool.

argon2 is the costliest thing an anonymous client can make the server do, so
the work has a pool of its own (``workers`` threads) and a bounded queue in
front of it: a call that finds ``workers + queue`` hashes already admitted is
refused at once with RESOURCE_EXHAUSTED and a retry delay, instead of waiting
behind them. A slot is freed when the hash is done (or dropped from the queue),
not when the caller stops waiting, so abandoned calls cannot overfill the pool.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from server.errors import ResourceExhausted

T = TypeVar("T")
BUSY_RETRY_AFTER = 1.0


class PasswordHasher:
    def __init__(
        self,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        workers: int = 1,
        queue: int = 4,
        on_refusal: Callable[[], None] | None = None,
    ) -> None:
        """``on_refusal`` is called for each call refused because the pool is full."""
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        # Verified against when the username is unknown, so that a wrong name
        # costs as much time as a wrong password.
        self._decoy = self._hasher.hash("taskgate-decoy-password")
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._capacity = workers + queue
        self._admitted = 0
        self._lock = threading.Lock()  # slots are freed from the pool's threads
        self._on_refusal = on_refusal

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Constant-time check; None (no such user) verifies the decoy and fails."""
        return await self._run(self._verify, password_hash, password)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def admitted(self) -> int:
        """Hashes running or queued now."""
        return self._admitted

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._admitted >= self._capacity:
                if self._on_refusal is not None:
                    self._on_refusal()
                raise ResourceExhausted(
                    "the server is busy checking passwords; try again shortly",
                    retry_after=BUSY_RETRY_AFTER,
                )
            self._admitted += 1
        future: Future[T] = self._executor.submit(function, *args)
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._admitted -= 1

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(password_hash or self._decoy, password)
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None
