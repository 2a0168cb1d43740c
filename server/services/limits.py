"""Per-client-address limits on the calls that make the server hash a password.

Each CreateSession and CreateUser from an address is counted as an *attempt*
just before its password is hashed (a malformed request costs nothing), and
the count is handed back when the call then fails on the server's side:

- kept: the call succeeded, or failed by the client's own doing (a wrong
  password, a taken username, a bad field), or the client went away or its
  deadline passed while its hash was running (the work is spent either way:
  a short deadline must not buy free hashes);
- refunded: UNAVAILABLE (an outage), INTERNAL (a bug), the hashing pool was
  busy, or the call was cancelled or ran out of time anywhere else (waiting
  for a hashing thread, for Postgres or for Redis: the server's slowness).

Past the limit in the window, the call is RESOURCE_EXHAUSTED without hashing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server import context
from server.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from server.metrics_auth import AuthMetrics
from server.storage.redis.sessions import SessionRepository

UNKNOWN_CLIENT = "unknown"
CLIENT_FAULTS = (InvalidArgument, Unauthenticated, NotFound, AlreadyExists, FailedPrecondition)
"""The answers that are the client's doing: the only failures a limit keeps counted."""

log = logging.getLogger(__name__)


def client_address() -> str:
    return context.client_address.get() or UNKNOWN_CLIENT


class Attempt:
    """One counted call; the service marks when its hash work starts and ends."""

    def __init__(self) -> None:
        self._hash_started = False
        self._hash_ended = False

    def hash_started(self) -> None:
        self._hash_started = True

    def hash_ended(self) -> None:
        self._hash_ended = True

    def keeps_count(self, error: BaseException | None) -> bool:
        """Whether a call that ended with ``error`` (None: success) stays counted."""
        if error is None or isinstance(error, CLIENT_FAULTS):
            return True
        abandoned = isinstance(error, asyncio.CancelledError) or context.deadline_passed()
        return abandoned and self._hash_started and not self._hash_ended


class ClientLimits:
    def __init__(
        self,
        *,
        counters: SessionRepository,
        login: int,
        register: int,
        window: float,
        metrics: AuthMetrics | None = None,
    ) -> None:
        self._counters = counters
        self._limits = {"login": login, "register": register}
        self._window = window
        self._metrics = metrics

    async def check(self, action: str) -> None:
        """RESOURCE_EXHAUSTED, without counting, when the address is already past its limit:
        so a flood from one address costs a Redis read, not a database query."""
        count, retry_after = await self._counters.client_attempts(action, client_address())
        if count >= self._limits[action]:
            raise self._refused(action, retry_after)

    @asynccontextmanager
    async def attempt(self, action: str) -> AsyncIterator[Attempt]:
        """Counts one ``action`` (login, register) from the caller's address for the
        body, and hands the count back if the body fails on the server's side."""
        client = client_address()
        count, retry_after = await self._counters.count_client_attempt(action, client, self._window)
        if count > self._limits[action]:
            raise self._refused(action, retry_after)
        attempt = Attempt()
        try:
            yield attempt
        except BaseException as error:
            if not attempt.keeps_count(error):
                await self._refund(action, client)
            raise

    async def _refund(self, action: str, client: str) -> None:
        """Outside the caller's deadline (it may be why we are here), and to the end
        even if the call is cancelled again meanwhile."""
        token = context.deadline.set(None)
        try:
            await asyncio.shield(self._counters.refund_client_attempt(action, client))
        except Exception:  # the call's own error is the one to report
            log.warning("could not hand back a %s attempt of a failed call", action, exc_info=True)
        finally:
            context.deadline.reset(token)

    def _refused(self, action: str, retry_after: float) -> ResourceExhausted:
        if self._metrics is not None:
            self._metrics.refused(f"client_{action}")
        return ResourceExhausted(
            f"too many {action} attempts from your address; try again in {retry_after:.0f}s",
            retry_after=retry_after,
        )
