"""Webhook endpoints and deliveries in Postgres.

:class:`EndpointRepository` is what the API reads and writes.
:class:`DeliveryQueue` is the dispatchers' side: the same machinery as the
task queue (claims with ``FOR UPDATE SKIP LOCKED`` that count the attempt,
endings fenced on the lease, a rescuer for expired leases), in one round trip
per exchange.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from server.models import TaskEvent
from server.storage.postgres.database import Database
from server.storage.postgres.events import event_from_row


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: UUID
    user_id: UUID
    url: str
    event_types: list[str]
    failing_since: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One POST of a delivery, as its endpoint's owner sees it."""

    event_id: int
    attempt: int
    started_at: datetime
    latency_ms: float | None
    http_status: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed delivery: its fence (id, attempt), where to POST, the keys, the event."""

    id: int
    attempt: int
    endpoint_id: UUID
    url: str
    secrets: tuple[str, ...]
    event: TaskEvent


def _delivery(
    *,
    delivery_id: int,
    attempt: int,
    endpoint_id: UUID,
    url: str,
    secret: str,
    previous_secret: str | None,
    **event: Any,
) -> Delivery:
    keys = (secret,) if previous_secret is None else (secret, previous_secret)
    return Delivery(delivery_id, attempt, endpoint_id, url, keys, event_from_row(**event))


@dataclass(frozen=True, slots=True)
class Result:
    """How an attempt went: the HTTP status (None when no answer came), the error."""

    delivery: Delivery
    started_at: datetime
    latency: float
    http_status: int | None
    error: str | None
    retry_delay: float  # when it is retried, after how long


@dataclass(frozen=True, slots=True)
class WebhookStats:
    oldest_undelivered_seconds: float
    disabled_endpoints: int


def _value(**columns: Any) -> Any:
    (value,) = columns.values()
    return value


class EndpointRepository:
    def __init__(self, *, database: Database) -> None:
        self._db = database

    async def insert(
        self, user_id: UUID, *, url: str, event_types: list[str], secret: str, max_endpoints: int
    ) -> Endpoint | None:
        """The new endpoint; None when the user already has ``max_endpoints``."""
        params = {
            "user_id": user_id,
            "url": url,
            "event_types": event_types,
            "secret": secret,
            "max_endpoints": max_endpoints,
        }
        return await self._db.fetch_one("insert_webhook_endpoint", params, Endpoint)

    async def get(self, user_id: UUID, endpoint_id: UUID) -> Endpoint | None:
        return await self._db.fetch_one(
            "get_webhook_endpoint", {"id": endpoint_id, "user_id": user_id}, Endpoint
        )

    async def of_user(self, user_id: UUID) -> list[Endpoint]:
        return await self._db.fetch_all("list_webhook_endpoints", {"user_id": user_id}, Endpoint)

    async def delete(self, user_id: UUID, endpoint_id: UUID) -> bool:
        gone = await self._db.fetch_one(
            "delete_webhook_endpoint", {"id": endpoint_id, "user_id": user_id}, _value
        )
        return gone is not None

    async def rotate(
        self, user_id: UUID, endpoint_id: UUID, *, secret: str, period: float
    ) -> Endpoint | None:
        params = {"id": endpoint_id, "user_id": user_id, "secret": secret, "period": period}
        return await self._db.fetch_one("rotate_webhook_secret", params, Endpoint)

    async def attempts(self, user_id: UUID, endpoint_id: UUID, limit: int) -> list[AttemptRecord]:
        return await self._db.fetch_all(
            "list_webhook_attempts",
            {"id": endpoint_id, "user_id": user_id, "limit": limit},
            AttemptRecord,
        )


class DeliveryQueue:
    def __init__(
        self,
        *,
        database: Database,
        owner: str,
        lease: float,
        max_attempts: int,
        disable_after: float,
    ) -> None:
        """``owner`` names this dispatcher in leases."""
        self._db = database
        self.owner = owner
        self._lease = lease
        self._max_attempts = max_attempts
        self._disable_after = disable_after

    async def exchange(
        self, results: Sequence[Result], *, claim: int, per_endpoint: int
    ) -> tuple[set[int], list[Delivery]]:
        """Ends ``results``' attempts and claims up to ``claim`` more deliveries, in one
        round trip and one transaction; returns the deliveries whose fence held and
        the claimed ones."""
        statements: list[tuple[str, dict[str, Any], Callable[..., Any]]] = []
        if results:
            statements.append(("finish_webhook_deliveries", self._endings(results), _value))
        if claim > 0:
            params = {
                "owner": self.owner,
                "lease": self._lease,
                "limit": claim,
                "per_endpoint": per_endpoint,
            }
            statements.append(("claim_webhook_deliveries", params, _delivery))
        if not statements:
            return set(), []
        rows = await self._db.fetch_all_pipelined(statements)
        ended: set[int] = set(rows[0]) if results else set()
        return ended, (rows[-1] if claim > 0 else [])

    def _endings(self, results: Sequence[Result]) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "running": "running",
            "max_attempts": self._max_attempts,
            "disable_after": self._disable_after,
            "ids": [r.delivery.id for r in results],
            "attempts": [r.delivery.attempt for r in results],
            "statuses": [r.http_status for r in results],
            "errors": [r.error for r in results],
            "latencies": [r.latency * 1000 for r in results],
            "started": [r.started_at for r in results],
            "delays": [r.retry_delay for r in results],
        }

    async def rescue_expired(self, *, delay: float, limit: int = 100) -> int:
        """Deliveries whose dispatcher died go back to pending; how many."""
        rescued: int = (
            await self._db.fetch_one(
                "rescue_webhook_deliveries",
                {"delay": delay, "limit": limit, "max_attempts": self._max_attempts},
                _value,
            )
            or 0
        )
        return rescued

    async def prune_events(self, *, retention: float, limit: int = 500) -> int:
        return await self._db.execute("prune_task_events", {"retention": retention, "limit": limit})

    async def stats(self) -> WebhookStats:
        stats = await self._db.fetch_one("webhook_stats", {}, WebhookStats)
        assert stats is not None  # an aggregate always returns a row
        return stats
