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

from server import logs
from server.client_address import ClientAddresses
from server.config import Settings
from server.health import LIVENESS, DependencyMonitor, HealthServicer
from server.interceptors.auth import PUBLIC_METHODS, AuthInterceptor
from server.interceptors.errors import ErrorInterceptor
from server.interceptors.metrics import MetricsInterceptor
from server.interceptors.reading import RequestReader
from server.interceptors.request_log import RequestLogInterceptor
from server.metrics import TaskMetrics
from server.metrics_auth import AuthMetrics
from server.metrics_http import MetricsListenError, MetricsServer, process_registry
from server.metrics_storage import DatabaseMetrics, RedisMetrics
from server.passwords import PasswordHasher
from server.processor.runtime import ProcessorRuntime
from server.rpc.sessions import SessionServicer
from server.rpc.tasks import TaskServicer
from server.rpc.users import UserServicer
from server.services.limits import ClientLimits
from server.services.sessions import SessionService
from server.services.task_events import TaskEvents
from server.services.tasks import TaskLimits, TaskService
from server.services.user_cache import UserCache
from server.services.users import UserService
from server.storage.postgres.database import Database, create_pool
from server.storage.postgres.listener import Listener
from server.storage.postgres.tasks import TaskRepository
from server.storage.postgres.users import UserRepository
from server.storage.redis.client import create_client
from server.storage.redis.keys import RedisKeys
from server.storage.redis.sessions import SessionRepository
from server.transport import server_options
from taskgate.v1 import session_service_pb2, task_service_pb2, user_service_pb2
from taskgate.v1 import session_service_pb2_grpc as session_grpc
from taskgate.v1 import task_service_pb2_grpc as task_grpc
from taskgate.v1 import user_service_pb2_grpc as user_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = {
    "user": user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    "session": session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    "task": task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
}
# The one method whose request may be large: it carries an image.
CREATE_TASK = "/taskgate.v1.TaskService/CreateTask"
# Every service needs both: users live in Postgres, sessions (hence auth) in Redis.
DEPENDENCIES = frozenset({"postgres", "redis"})
TASK_EVENTS_CHANNEL = "taskgate_task_events"


class ListenError(Exception):
    """The gRPC or the metrics address cannot be bound."""


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
        self.db_metrics = DatabaseMetrics(self.registry)
        auth_metrics = AuthMetrics(self.registry)
        self.metrics_server = MetricsServer(self.registry, settings.metrics_addr)
        self.pool: AsyncConnectionPool = create_pool(
            settings.database_url.reveal(),
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            timeout=settings.db_timeout,
            reconnect_timeout=settings.db_reconnect_timeout,
        )
        self.redis: Redis = create_client(
            settings.redis_url.reveal(), timeout=settings.redis_timeout
        )
        self.db_metrics.pools.add("api", self.pool)
        self.database = database = Database(
            pool=self.pool, timeout=settings.db_timeout, metrics=self.db_metrics
        )
        user_repository = UserRepository(database=database)
        session_repository = SessionRepository(
            redis=self.redis,
            keys=RedisKeys(settings.redis_key_prefix),
            timeout=settings.redis_timeout,
            metrics=RedisMetrics(self.registry),
        )
        self.hasher = hasher = hasher or PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            workers=settings.password_hash_workers,
            queue=settings.password_hash_queue,
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
            conninfo=settings.database_url.reveal(), connect_timeout=settings.db_timeout
        )
        events = TaskEvents()
        self.listener.subscribe(TASK_EVENTS_CHANNEL, events.changed)
        self.listener.on_reconnect(events.wake_all)
        self.tasks = TaskService(
            tasks=TaskRepository(database=database, fair=settings.queue_fairness),
            events=events,
            limits=TaskLimits(
                max_image_bytes=settings.max_image_bytes,
                max_pixels=settings.max_image_pixels,
                max_attempts=settings.task_max_attempts,
                watch_poll_interval=settings.watch_poll_interval,
                max_pending=settings.user_max_pending,
            ),
            metrics=self.task_metrics,
        )
        self.processor: ProcessorRuntime | None = None
        if settings.embedded_processor:
            self.processor = ProcessorRuntime(
                settings,
                listener=self.listener,
                metrics=self.task_metrics,
                db_metrics=self.db_metrics,
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
        self.server = grpc.aio.server(
            interceptors=[
                # The outermost: it sees every call's final status, whoever set it.
                MetricsInterceptor(registry=self.registry),
                RequestLogInterceptor(client_addresses=ClientAddresses(settings.trusted_proxies)),
                ErrorInterceptor(),
                AuthInterceptor(authenticate=self.sessions.authenticate),
                RequestReader(
                    default_limit=settings.max_request_bytes,
                    limits={CREATE_TASK: settings.max_message_bytes},
                    unauthenticated=PUBLIC_METHODS,
                    unauthenticated_reads=settings.max_unauthenticated_reads,
                ),
            ],
            options=server_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        user_grpc.add_UserServiceServicer_to_server(UserServicer(users=users), self.server)
        session_grpc.add_SessionServiceServicer_to_server(
            SessionServicer(sessions=self.sessions), self.server
        )
        task_grpc.add_TaskServiceServicer_to_server(TaskServicer(tasks=self.tasks), self.server)
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

    async def start(self) -> int:
        """Binds, opens the pools, runs a first health check and serves; returns the port.

        Raises ListenError, with nothing left open, when an address (gRPC or
        metrics) cannot be bound.
        """
        try:
            self.port = self.server.add_insecure_port(self.settings.grpc_addr)
        except RuntimeError:
            await self._close_clients()
            raise ListenError(
                f"cannot listen on {self.settings.grpc_addr}: the port is taken "
                "or the host is not an address of this machine"
            ) from None
        try:
            await self.metrics_server.start()
        except MetricsListenError as exc:
            await self.server.stop(None)  # gives the gRPC port back
            await self._close_clients()
            raise ListenError(str(exc)) from None
        await self.pool.open(wait=False)
        self.listener.start()
        if self.processor is not None:
            await self.processor.start()
        await self.monitor.check_once()
        self._monitor_task = asyncio.create_task(self.monitor.run(), name="health-monitor")
        await self.server.start()
        log.info(
            "serving gRPC on %s",
            self._listen_addr(),
            extra={"fields": {"addr": self._listen_addr()}},
        )
        return self.port

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
            *([self.processor.stop(grace)] if self.processor is not None else []),
        )
        await self.listener.stop()
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
