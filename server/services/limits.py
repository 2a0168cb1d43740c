"""Per-client-address limits on the calls that make the server hash a password.

Each CreateSession and CreateUser from an address is counted just before its
password is hashed (an outage or a malformed request costs nothing); past the
limit in the window, the call is RESOURCE_EXHAUSTED without hashing.
"""

from __future__ import annotations

from server import context
from server.errors import ResourceExhausted
from server.metrics_auth import AuthMetrics
from server.storage.redis.sessions import SessionRepository

UNKNOWN_CLIENT = "unknown"


def client_address() -> str:
    return context.client_address.get() or UNKNOWN_CLIENT


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

    async def spend(self, action: str) -> None:
        """Counts one ``action`` (login, register) from the caller's address."""
        count, retry_after = await self._counters.count_client_attempt(
            action, client_address(), self._window
        )
        if count > self._limits[action]:
            raise self._refused(action, retry_after)

    def _refused(self, action: str, retry_after: float) -> ResourceExhausted:
        if self._metrics is not None:
            self._metrics.refused(f"client_{action}")
        return ResourceExhausted(
            f"too many {action} attempts from your address; try again in {retry_after:.0f}s",
            retry_after=retry_after,
        )
