"""Password hashing with argon2id, off the event loop, shared fairly.

argon2 is the costliest thing an anonymous client can make the server do, so
the work has a pool of its own (``workers`` threads) and a scheduler in front
of it that decides whose hash runs next when every thread is busy:

- **Two lanes.** A login that presents a valid device token for its username
  (proof of an earlier successful login from that client, see
  :mod:`server.services.sessions`) waits in the *trusted* lane; everything else
  (logins without one, unknown usernames, registrations) in the *open* lane.
  A free thread always takes trusted work first, so a flood of guesses, from
  however many addresses, delays a returning user by at most the hashes
  already running.
- **Fair by username.** Within a lane, waiting hashes are queued per username
  and the usernames are served in turn (round-robin), and no username may
  have more than ``per_username`` hashes waiting: guessing one user's password
  spends that user's share, not everyone's.
- **Bounded.** Each lane holds at most ``queue`` waiting hashes, and a hash
  waits at most ``max_wait`` seconds for a thread; past either, the call is
  refused with RESOURCE_EXHAUSTED and a retry delay. A hash that started runs
  to its end and frees its thread then (not when its caller stops waiting);
  one whose caller goes away while it waits is dropped unrun.

Everything but the hash itself runs on the event loop: no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar, cast

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from server.errors import ResourceExhausted

T = TypeVar("T")
BUSY_RETRY_AFTER = 1.0


class Lane(Enum):
    TRUSTED = "trusted"
    OPEN = "open"


@dataclass(eq=False)
class _Job:
    lane: Lane
    key: str
    run: Callable[[], Any]
    done: asyncio.Future[Any]
    on_start: Callable[[], None] | None
    started: bool = False
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)


class _LaneQueue:
    """The hashes waiting in one lane: a FIFO per username, usernames in turn."""

    def __init__(self) -> None:
        self._by_key: OrderedDict[str, deque[_Job]] = OrderedDict()
        self.size = 0

    def waiting(self, key: str) -> int:
        return len(self._by_key.get(key, ()))

    def push(self, job: _Job) -> None:
        self._by_key.setdefault(job.key, deque()).append(job)
        self.size += 1

    def pop(self) -> _Job | None:
        if not self._by_key:
            return None
        key, jobs = self._by_key.popitem(last=False)
        job = jobs.popleft()
        if jobs:
            self._by_key[key] = jobs  # back of the line: the next username's turn
        self.size -= 1
        return job

    def remove(self, job: _Job) -> bool:
        jobs = self._by_key.get(job.key)
        if jobs is None or job not in jobs:
            return False
        jobs.remove(job)
        if not jobs:
            del self._by_key[job.key]
        self.size -= 1
        return True


class PasswordHasher:
    def __init__(
        self,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        workers: int = 1,
        queue: int = 256,
        per_username: int = 2,
        max_wait: float = 2.0,
        on_refusal: Callable[[], None] | None = None,
    ) -> None:
        """``on_refusal`` is called for each call refused because its lane is full."""
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
        self._workers = workers
        self._queue_limit = queue
        self._per_username = per_username
        self._max_wait = max_wait
        self._on_refusal = on_refusal
        self._running = 0
        self._lanes = {lane: _LaneQueue() for lane in Lane}

    async def hash(
        self, password: str, *, key: str, on_start: Callable[[], None] | None = None
    ) -> str:
        """The hash of a new password; ``key`` (the username) is whose share it spends."""
        return await self._run(Lane.OPEN, key, on_start, self._hash, password)

    async def verify(
        self,
        password_hash: str | None,
        password: str,
        *,
        key: str,
        trusted: bool = False,
        on_start: Callable[[], None] | None = None,
    ) -> bool:
        """Constant-time check; None (no such user) verifies the decoy and fails.
        ``trusted``: the caller proved an earlier login (the trusted lane)."""
        lane = Lane.TRUSTED if trusted else Lane.OPEN
        return await self._run(lane, key, on_start, self._verify, password_hash, password)

    def check_room(self, *, key: str, trusted: bool = False) -> None:
        """RESOURCE_EXHAUSTED now if a hash for ``key`` in that lane would be refused now:
        a call can stop before it spends a database query on a hash that cannot run."""
        if not self._has_room(Lane.TRUSTED if trusted else Lane.OPEN, key):
            raise self._busy()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def admitted(self) -> int:
        """Hashes running or waiting now."""
        return self._running + sum(lane.size for lane in self._lanes.values())

    async def _run(
        self,
        lane: Lane,
        key: str,
        on_start: Callable[[], None] | None,
        function: Callable[..., T],
        *args: object,
    ) -> T:
        loop = asyncio.get_running_loop()
        job = _Job(lane, key, functools.partial(function, *args), loop.create_future(), on_start)
        self._admit(job)
        try:
            return cast(T, await asyncio.shield(job.done))
        except asyncio.CancelledError:
            self._drop(job)  # unrun if it was still waiting; a running hash runs on
            raise

    def _has_room(self, lane: Lane, key: str) -> bool:
        if self._running < self._workers:
            return True
        waiting = self._lanes[lane]
        return waiting.size < self._queue_limit and waiting.waiting(key) < self._per_username

    def _admit(self, job: _Job) -> None:
        if self._running < self._workers:
            self._start(job)
            return
        if not self._has_room(job.lane, job.key):
            raise self._busy()
        self._lanes[job.lane].push(job)
        job.expiry = asyncio.get_running_loop().call_later(self._max_wait, self._expire, job)

    def _start(self, job: _Job) -> None:
        job.started = True
        if job.expiry is not None:
            job.expiry.cancel()
        self._running += 1
        if job.on_start is not None:
            job.on_start()
        loop = asyncio.get_running_loop()
        work = self._executor.submit(job.run)
        work.add_done_callback(functools.partial(self._finished_in_thread, loop, job))

    def _finished_in_thread(
        self, loop: asyncio.AbstractEventLoop, job: _Job, work: Future[Any]
    ) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(self._finished, job, work)

    def _finished(self, job: _Job, work: Future[Any]) -> None:
        self._running -= 1
        if not job.done.done():
            if work.cancelled():
                job.done.cancel()
            elif (error := work.exception()) is not None:
                job.done.set_exception(error)
            else:
                job.done.set_result(work.result())
        self._dispatch()

    def _dispatch(self) -> None:
        while self._running < self._workers:
            job = self._lanes[Lane.TRUSTED].pop() or self._lanes[Lane.OPEN].pop()
            if job is None:
                return
            self._start(job)

    def _expire(self, job: _Job) -> None:
        """A hash that waited ``max_wait`` for a thread is refused, unrun."""
        if self._lanes[job.lane].remove(job) and not job.done.done():
            job.done.set_exception(self._busy())

    def _drop(self, job: _Job) -> None:
        if job.started:
            job.done.cancel()  # nobody will read its result
            return
        if job.expiry is not None:
            job.expiry.cancel()
        self._lanes[job.lane].remove(job)

    def _busy(self) -> ResourceExhausted:
        if self._on_refusal is not None:
            self._on_refusal()
        return ResourceExhausted(
            "the server is busy checking passwords; try again shortly",
            retry_after=BUSY_RETRY_AFTER,
        )

    def _hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(password_hash or self._decoy, password)
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None
