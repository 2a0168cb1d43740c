"""The composition root: settings in, a running server out.

The only module that knows the concrete classes: it opens the pools, builds
repositories, services and servicers, chains the interceptors, and shuts it
all down in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from server.client_address import ClientAddresses
from server.config import Settings
from server.health import LIVENESS, DependencyMonitor, HealthServicer
from server.interceptors.auth import PUBLIC_METHODS, AuthInterceptor
from server.interceptors.capacity import CallLimiter, UserStreamLimiter
from server.interceptors.errors import ErrorInterceptor
from server.interceptors.metrics import MetricsInterceptor
from server.interceptors.reading import RequestReader
from server.interceptors.request_log import RequestLogInterceptor
from server.interceptors.tracing import TracingInterceptor
from server.metrics import TaskMetrics
from server.metrics_auth import AuthMetrics
from server.metrics_storage import DatabaseMetrics, ReadMetrics, RedisMetrics
from server.passwords import PasswordHasher
from server.processor.runtime import ProcessorRuntime
from server.queue_sampler import QueueSampler
from server.rpc.sessions import SessionServicer
from server.rpc.tasks import TaskServicer
from server.rpc.users import UserServicer
from server.rpc.webhooks import WebhookServicer
from server.services.limits import ClientLimits
from server.services.sessions import SessionService
from server.services.task_events import TaskEvents
from server.services.task_feed import TaskFeed
from server.services.tasks import TaskLimits, TaskService, result_chunk_bytes
from server.services.user_cache import UserCache
from server.services.users import UserService
from server.services.webhooks import WebhookRules, WebhookService
from server.storage.postgres.database import Database, create_pool
from server.storage.postgres.events import EventRepository
from server.storage.postgres.listener import Listener
from server.storage.postgres.replicas import ReadRouter, ReplicaMonitor, open_replicas
from server.storage.postgres.tasks import TaskRepository
from server.storage.postgres.users import UserRepository
from server.storage.postgres.webhooks import EndpointRepository
from server.storage.redis.client import create_client
from server.storage.redis.devices import DeviceTokenRepository
from server.storage.redis.keys import RedisKeys
from server.storage.redis.positions import WalPositions
from server.storage.redis.sessions import SessionRepository
from server.tls import ServerTls
from server.transport import bind, health_server, server_options
from server.webhooks.metrics import WebhookMetrics
from taskgate.v1 import (
    session_service_pb2,
    task_service_pb2,
    user_service_pb2,
    webhook_service_pb2,
)
from taskgate.v1 import session_service_pb2_grpc as session_grpc
from taskgate.v1 import task_service_pb2_grpc as task_grpc
from taskgate.v1 import user_service_pb2_grpc as user_grpc
from taskgate.v1 import webhook_service_pb2_grpc as webhook_grpc
from taskgate_runtime import logs, telemetry
from taskgate_runtime.metrics_http import MetricsListenError, MetricsServer, process_registry
from taskgate_runtime.tls import TlsFileError

log = logging.getLogger(__name__)

SERVICE_NAMES = {
    "user": user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    "session": session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    "task": task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    "webhook": webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
}
# The one method whose request may be large: it carries an image.
CREATE_TASK = "/taskgate.v1.TaskService/CreateTask"
# Every service needs both: users live in Postgres, sessions (hence auth) in Redis.
DEPENDENCIES = frozenset({"postgres", "redis"})
TASK_EVENTS_CHANNEL = "taskgate_task_events"
TASK_FEED_CHANNEL = "taskgate_task_feed"


class ListenError(Exception):
    """The gRPC, health or metrics address cannot be bound, or a TLS file is unusable."""


class App:
    """A built server; ``start`` binds and serves, ``stop`` drains and closes."""

    def __init__(
        self,
        settings: Settings,
        *,
        hasher: PasswordHasher | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """``hasher`` replaces the one built from the settings (tests slow it down)."""
        self.settings = settings
        logs.install_grpc_filter()
        self.registry = process_registry() if registry is None else registry
        self.task_metrics = TaskMetrics(self.registry)
        self.webhook_metrics = WebhookMetrics(self.registry)  # the embedded dispatcher's
        self.db_metrics = DatabaseMetrics(self.registry)
        auth_metrics = AuthMetrics(self.registry)
        self.metrics_server = MetricsServer(self.registry, settings.metrics_addr)
        self.pool: AsyncConnectionPool = create_pool(
            settings.database_url.get_secret_value(),
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            timeout=settings.db_timeout,
            reconnect_timeout=settings.db_reconnect_timeout,
        )
        self.redis: Redis = create_client(
            settings.redis_url.get_secret_value(),
            timeout=settings.redis_timeout,
            pool_size=settings.redis_pool_size,
        )
        self.db_metrics.pools.add("api", self.pool)
        self.database = database = Database(
            pool=self.pool, timeout=settings.db_timeout, metrics=self.db_metrics
        )
        keys = RedisKeys(settings.redis_key_prefix)
        redis_metrics = RedisMetrics(self.registry)
        self.reads, self.replica_monitor = self._reads(database, keys, redis_metrics)
        user_repository = UserRepository(database=database, reads=self.reads)
        session_repository = SessionRepository(
            redis=self.redis, keys=keys, timeout=settings.redis_timeout, metrics=redis_metrics
        )
        self.hasher = hasher = hasher or PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            workers=settings.password_hash_workers,
            queue=settings.password_hash_queue,
            per_username=settings.password_hash_per_username,
            max_wait=settings.password_hash_max_wait,
            on_refusal=functools.partial(auth_metrics.refused, "password_hashing"),
        )
        client_limits = ClientLimits(
            counters=session_repository,
            login=settings.client_login_limit,
            register=settings.client_register_limit,
            window=settings.client_rate_window,
            metrics=auth_metrics,
        )
        self.sessions = SessionService(
            users=user_repository,
            sessions=session_repository,
            hasher=hasher,
            ttl=settings.session_ttl,
            login_limit=settings.login_rate_limit,
            login_window=settings.login_rate_window,
            client_limits=client_limits,
            devices=DeviceTokenRepository(
                redis=self.redis,
                keys=keys,
                timeout=settings.redis_timeout,
                metrics=redis_metrics,
            ),
            device_token_ttl=settings.device_token_ttl,
            metrics=auth_metrics,
        )
        users = UserService(
            users=user_repository,
            sessions=session_repository,
            hasher=hasher,
            cache=UserCache(max_size=settings.user_cache_size, max_age=settings.user_cache_ttl),
            client_limits=client_limits,
        )
        # One LISTEN connection for the whole process: watchers and the embedded processor.
        self.listener = Listener(
            conninfo=settings.database_url.get_secret_value(), connect_timeout=settings.db_timeout
        )
        events = TaskEvents()
        self.listener.subscribe(TASK_EVENTS_CHANNEL, events.changed)
        self.listener.on_reconnect(events.wake_all)
        feed_wakeups = TaskEvents()  # keyed by user id
        self.listener.subscribe(TASK_FEED_CHANNEL, feed_wakeups.changed)
        self.listener.on_reconnect(feed_wakeups.wake_all)
        self.feed = TaskFeed(
            events=EventRepository(database=database),
            wakeups=feed_wakeups,
            poll_interval=settings.watch_poll_interval,
        )
        task_repository = TaskRepository(
            database=database, reads=self.reads, fair=settings.queue_fairness
        )
        self.tasks = TaskService(
            tasks=task_repository,
            events=events,
            limits=TaskLimits(
                max_image_bytes=settings.max_image_bytes,
                max_pixels=settings.max_image_pixels,
                max_attempts=settings.task_max_attempts,
                watch_poll_interval=settings.watch_poll_interval,
                result_chunk_bytes=result_chunk_bytes(settings.max_message_bytes),
                max_pending=settings.user_max_pending,
            ),
            metrics=self.task_metrics,
        )
        self.webhooks = WebhookService(
            endpoints=EndpointRepository(database=database),
            rules=WebhookRules(
                allow_http=settings.webhook_allow_http,
                allow_private=settings.webhook_allow_private,
                max_endpoints=settings.webhook_max_endpoints,
                rotation_period=settings.webhook_secret_rotation_period,
            ),
        )
        self.processor: ProcessorRuntime | None = None
        if settings.embedded_processor:
            self.processor = ProcessorRuntime(
                settings.embedded_processor_settings(),
                listener=self.listener,
                metrics=self.task_metrics,
                db_metrics=self.db_metrics,
                webhook_metrics=self.webhook_metrics,
            )
        # Without a processor inside, the server samples the queue gauges itself.
        self.queue_sampler = (
            None
            if self.processor is not None
            else QueueSampler(
                tasks=task_repository,
                metrics=self.task_metrics,
                interval=settings.processor_stats_interval,
            )
        )
        self.health = HealthServicer()
        self.monitor = DependencyMonitor(
            health=self.health,
            probes={"postgres": database.ping, "redis": session_repository.ping},
            needs={
                LIVENESS: frozenset(),  # served while the event loop serves calls
                **{name: DEPENDENCIES for name in SERVICE_NAMES.values()},
            },
            interval=settings.health_check_interval,
        )
        # Instead of grpc's maximum_concurrent_rpcs, which counts health checks too.
        self.call_limiter = CallLimiter(
            calls=settings.max_concurrent_rpcs, health=settings.max_concurrent_health_rpcs
        )
        self.stream_limiter = UserStreamLimiter(per_user=settings.max_streams_per_user)
        self.server = grpc.aio.server(
            interceptors=[
                # Each call's span (when tracing is on), around everything below.
                *([TracingInterceptor()] if telemetry.enabled() else []),
                # The outermost: it sees every call's final status, whoever set it.
                MetricsInterceptor(registry=self.registry),
                RequestLogInterceptor(client_addresses=ClientAddresses(settings.trusted_proxies)),
                ErrorInterceptor(),
                self.call_limiter,
                AuthInterceptor(authenticate=self.sessions.authenticate),
                self.stream_limiter,
                RequestReader(
                    default_limit=settings.max_request_bytes,
                    limits={CREATE_TASK: settings.max_message_bytes},
                    unauthenticated=PUBLIC_METHODS,
                    unauthenticated_reads=settings.max_unauthenticated_reads,
                ),
            ],
            options=server_options(settings),
        )
        user_grpc.add_UserServiceServicer_to_server(UserServicer(users=users), self.server)
        session_grpc.add_SessionServiceServicer_to_server(
            SessionServicer(sessions=self.sessions), self.server
        )
        task_grpc.add_TaskServiceServicer_to_server(
            TaskServicer(tasks=self.tasks, feed=self.feed), self.server
        )
        webhook_grpc.add_WebhookServiceServicer_to_server(
            WebhookServicer(webhooks=self.webhooks), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                *SERVICE_NAMES.values(),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self._monitor_task: asyncio.Task[None] | None = None
        self.port = 0
        self.tls: ServerTls | None = None
        self.health_server: grpc.aio.Server | None = None
        self.health_port = 0
        self._binding = settings.grpc_addr

    def _reads(
        self, primary: Database, keys: RedisKeys, redis_metrics: RedisMetrics
    ) -> tuple[ReadRouter, ReplicaMonitor]:
        """Reads on the replicas of TASKGATE_DATABASE_REPLICA_URLS when fresh enough."""
        settings = self.settings
        replicas = open_replicas(
            settings.replica_urls,
            pool_size=settings.database_replica_pool_size,
            timeout=settings.database_replica_timeout,
            reconnect_timeout=settings.db_reconnect_timeout,
            metrics=self.db_metrics,
        )
        read_metrics = ReadMetrics(self.registry)
        for replica in replicas:
            read_metrics.replicas.add(replica)
        positions = WalPositions(
            redis=self.redis, keys=keys, timeout=settings.redis_timeout, metrics=redis_metrics
        )
        router = ReadRouter(
            primary=primary,
            replicas=replicas,
            positions=positions if replicas else None,
            counted=read_metrics.counted,
            wait=settings.database_replica_wait,
        )
        monitor = ReplicaMonitor(
            primary=primary,
            replicas=replicas,
            interval=settings.database_replica_check_interval,
            max_lag=settings.database_replica_max_lag,
        )
        return router, monitor

    async def start(self) -> int:
        """Binds, opens the pools, runs a first health check and serves; returns the port.

        Raises ListenError, with nothing left open, when an address (gRPC, health
        or metrics) cannot be bound or a TLS file is unusable.
        """
        try:
            self._bind()
            await self.metrics_server.start()
        except (RuntimeError, TlsFileError, MetricsListenError) as exc:
            await self.server.stop(None)  # gives the gRPC port back
            if self.health_server is not None:
                await self.health_server.stop(None)
            await self._close_clients()
            raise ListenError(self._listen_problem(exc)) from None
        await self.pool.open(wait=False)
        for replica in self.reads.replicas:
            await replica.pool.open(wait=False)
        self.replica_monitor.start()
        self.listener.start()
        if self.processor is not None:
            await self.processor.start()
        if self.queue_sampler is not None:
            self.queue_sampler.start()
        await self.monitor.check_once()
        self._monitor_task = asyncio.create_task(self.monitor.run(), name="health-monitor")
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
            log.info("serving gRPC health (plaintext) on port %d", self.health_port)
        log.info(
            "serving gRPC on %s (%s)",
            self._listen_addr(),
            self._security(),
            extra={"fields": {"addr": self._listen_addr(), "tls": self.tls is not None}},
        )
        return self.port

    def _bind(self) -> None:
        """The gRPC port (TLS or not) and the health port; raises what ``start`` translates."""
        self.port, self.tls = bind(self.server, self.settings)
        if self.settings.grpc_health_addr is not None:
            self._binding = self.settings.grpc_health_addr
            self.health_server = health_server(self.health)
            self.health_port = self.health_server.add_insecure_port(self._binding)

    def _listen_problem(self, exc: Exception) -> str:
        if isinstance(exc, RuntimeError):
            return (
                f"cannot listen on {self._binding}: the port is taken "
                "or the host is not an address of this machine"
            )
        return str(exc)

    def _security(self) -> str:
        if self.tls is None:
            return "plaintext"
        mtls = ", client certificates required" if self.settings.tls_client_ca_file else ""
        return f"TLS{mtls}"

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first, then in-flight calls get ``grace`` seconds, then the pools close."""
        grace = self.settings.shutdown_grace if grace is None else grace
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor_task
        await self.health.enter_graceful_shutdown()
        # Calls drain and running tasks finish (or are handed back) side by side.
        await asyncio.gather(
            self.server.stop(grace),
            *([self.health_server.stop(grace)] if self.health_server is not None else []),
            *([self.processor.stop(grace)] if self.processor is not None else []),
        )
        if self.queue_sampler is not None:
            await self.queue_sampler.stop()
        await self.listener.stop()
        await self.replica_monitor.stop()
        for replica in self.reads.replicas:
            await replica.database.close()
        await self.database.close()
        await self.metrics_server.stop()
        await self._close_clients()
        log.info("stopped")

    async def _close_clients(self) -> None:
        await self.redis.aclose()
        self.hasher.close()

    def _listen_addr(self) -> str:
        host = self.settings.grpc_addr.rpartition(":")[0]
        return f"{host}:{self.port}"
