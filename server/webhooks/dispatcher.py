"""The webhook dispatcher: claims deliveries, POSTs them, and records how they went.

Built like the processor's exchange loop, on the same queue machinery: one
loop talks to Postgres, one round trip at a time, ending every attempt that
finished since the last one (one fenced statement for them all) and, in the
same transaction, claiming up to the free concurrency (``FOR UPDATE SKIP
LOCKED``, the attempt counted in the claim, at most
TASKGATE_WEBHOOK_ENDPOINT_CONCURRENCY running per endpoint, and per task and
endpoint only the earliest open delivery, so events arrive in order). Each
POST runs in a task of its own under a short timeout: a slow endpoint holds at
most its own few slots and never delays the others. It claims when an event
brings deliveries (LISTEN taskgate_webhooks), when a retry falls due, or at
the latest every TASKGATE_WEBHOOK_POLL_INTERVAL. A dispatcher that dies
leaves its deliveries leased; the rescuer of any dispatcher puts them back
once the lease expires, and they are sent again with the same webhook-id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from server.errors import TaskgateError
from server.storage.postgres.listener import Listener
from server.storage.postgres.webhooks import Delivery, DeliveryQueue, Result
from server.webhooks import signing
from server.webhooks.config import WebhookTuning
from server.webhooks.metrics import WebhookMetrics
from server.webhooks.sender import Answer, Sender

log = logging.getLogger(__name__)

WEBHOOKS_CHANNEL = "taskgate_webhooks"
CLAIM_BATCH_MAX = 50
RESCUED_DELAY = 1.0  # a delivery whose dispatcher died is tried again after this


class Dispatcher:
    def __init__(
        self,
        *,
        queue: DeliveryQueue,
        sender: Sender,
        listener: Listener,
        metrics: WebhookMetrics,
        settings: WebhookTuning,
        maintenance_interval: float = 60.0,
        stats_interval: float = 5.0,
    ) -> None:
        self._queue = queue
        self._sender = sender
        self._metrics = metrics
        self._settings = settings
        self._intervals = (maintenance_interval, stats_interval)
        self._sending: set[asyncio.Task[None]] = set()
        self._results: list[Result] = []
        self._stir = asyncio.Event()
        self._wanted = True
        self._stopping = False
        self._exchanger: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[None]] = []
        listener.subscribe(WEBHOOKS_CHANNEL, lambda _: self._want())
        listener.on_reconnect(self._want)

    @property
    def id(self) -> str:
        return self._queue.owner

    async def start(self) -> None:
        await self._sender.start()
        self._exchanger = asyncio.create_task(self._exchange_loop(), name="webhook-exchange")
        maintenance, stats = self._intervals
        rescue = max(
            0.5, min(self._settings.webhook_lease / 2, self._settings.webhook_poll_interval)
        )
        self._loops = [
            asyncio.create_task(self._every(rescue, self._rescue)),
            asyncio.create_task(self._every(maintenance, self._prune)),
            asyncio.create_task(self._every(stats, self._sample)),
        ]

    async def stop(self, grace: float) -> None:
        """Stops claiming, lets POSTs in flight finish for ``grace``, records them."""
        self._stopping = True
        self._stir.set()
        if self._sending:
            _, unfinished = await asyncio.wait(list(self._sending), timeout=grace)
            for task in unfinished:
                task.cancel()  # its lease expires and a dispatcher sends it again
            await asyncio.gather(*unfinished, return_exceptions=True)
        self._stir.set()
        if self._exchanger is not None:
            await self._exchanger
        for task in list(self._sending):  # launched by the last exchange: their leases expire
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self._sender.close()

    def _want(self) -> None:
        self._wanted = True
        self._stir.set()

    async def _exchange_loop(self) -> None:
        while True:
            self._stir.clear()
            results, self._results = self._results, []
            free = self._settings.webhook_concurrency - len(self._sending)
            asked = 0
            if not self._stopping and (self._wanted or results):
                asked = max(0, min(free, CLAIM_BATCH_MAX))
            if results or asked:
                await self._exchange(results, asked)
            elif self._stopping:
                return
            elif not await self._stirred(self._settings.webhook_poll_interval if free else None):
                self._wanted = True  # a poll: retries that fell due, or a lost notification

    async def _exchange(self, results: list[Result], asked: int) -> None:
        if asked:
            self._wanted = False
        try:
            _, claimed = await self._queue.exchange(
                results, claim=asked, per_endpoint=self._settings.webhook_endpoint_concurrency
            )
        except TaskgateError as exc:
            log.warning("webhook deliveries: %s", exc)
            self._results = results + self._results  # recorded on the next round trip
            self._wanted = self._wanted or bool(asked)
            await self._stirred(1.0)
            return
        if asked and len(claimed) == asked:
            self._wanted = True  # there may be more
        for delivery in claimed:
            if self._stopping:  # claimed as shutdown began: its lease expires, it is sent again
                break
            task = asyncio.create_task(self._send(delivery), name=f"webhook-{delivery.id}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, delivery: Delivery) -> None:
        event = delivery.event
        payload = signing.body(event)
        now = datetime.now(UTC)
        headers = signing.headers(
            msg_id=signing.webhook_id(event.id), payload=payload, keys=delivery.secrets, now=now
        )
        try:
            answer = await self._sender.post(delivery.url, payload, headers)
        except Exception as exc:  # a bug must not leave the delivery leased until it expires
            log.exception("webhook %s: the POST failed unexpectedly", signing.webhook_id(event.id))
            answer = Answer("connection_error", None, f"{type(exc).__name__}: {exc}", 0.0)
        self._metrics.deliveries.labels(answer.outcome).inc()
        self._metrics.latency.observe(answer.latency)
        if answer.error is not None:
            log.info("webhook %s to endpoint %s, attempt %d: %s", signing.webhook_id(event.id),
                     delivery.endpoint_id, delivery.attempt, answer.error)  # fmt: skip
        self._results.append(
            Result(
                delivery=delivery,
                started_at=now,
                latency=answer.latency,
                http_status=answer.http_status,
                error=answer.error,
                retry_delay=self._settings.retry_delay(delivery.attempt),
            )
        )
        self._stir.set()

    async def _stirred(self, seconds: float | None) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._stir.wait()
        except TimeoutError:
            return False
        return True

    async def _every(self, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except TaskgateError as exc:
                log.warning("%s failed: %s", action.__name__.strip("_"), exc)

    async def _rescue(self) -> None:
        rescued = await self._queue.rescue_expired(delay=RESCUED_DELAY)
        if rescued:
            self._metrics.rescued.inc(rescued)
            log.warning("%d webhook deliveries lost their dispatcher; sent again", rescued)
            self._want()

    async def _prune(self) -> None:
        while await self._queue.prune_events(retention=self._settings.event_retention) > 0:
            pass

    async def _sample(self) -> None:
        stats = await self._queue.stats()
        self._metrics.oldest_undelivered.set(stats.oldest_undelivered_seconds)
        self._metrics.disabled_endpoints.set(stats.disabled_endpoints)
