"""The metric families and label names each process exports: the contract.

tests/e2e/test_observability.py asserts exactly these on the real processes'
``/metrics`` after real traffic; the dashboard and the rules may use only these
(tests/monitoring/test_metrics_contract.py). A renamed metric breaks a test.
"""

from __future__ import annotations

GRPC = {"grpc_type", "grpc_service", "grpc_method"}
PROCESS_FAMILIES: dict[str, set[str]] = {
    "process_cpu_seconds_total": set(),
    "process_resident_memory_bytes": set(),
    "process_open_fds": set(),
    "python_info": {"implementation", "major", "minor", "patchlevel", "version"},
    "python_gc_objects_collected_total": {"generation"},
}
TASK_FAMILIES: dict[str, set[str]] = {
    "tasks_created_total": set(),
    "tasks_finished_total": {"status"},
    "tasks_retried_total": {"reason"},
    "processing_time_seconds_bucket": {"le"},
    "task_queue_wait_seconds_bucket": {"le"},
    "task_claim_to_start_seconds_bucket": {"le"},
    "tasks_queue_depth": set(),
    "tasks_running": set(),
    "tasks_oldest_pending_age_seconds": set(),
    "task_limit_refusals_total": {"limit"},
    "task_claim_overtaken_bucket": {"le"},
    "tasks_queue_users": set(),
    "tasks_queue_largest_user_backlog": set(),
}
# The webhook dispatcher every processor runs (TASKGATE_WEBHOOK_DISPATCHER).
WEBHOOK_FAMILIES: dict[str, set[str]] = {
    "webhook_deliveries_total": {"outcome"},
    "webhook_delivery_seconds_bucket": {"le"},
    "outbox_oldest_undelivered_age_seconds": set(),
    "webhook_endpoints_disabled": set(),
    "webhook_deliveries_rescued_total": set(),
}
DB_FAMILIES: dict[str, set[str]] = {
    "db_pool_connections_idle": {"pool"},
    "db_pool_connections_in_use": {"pool"},
    "db_pool_connections_max": {"pool"},
    "db_pool_requests_waiting": {"pool"},
    "db_query_duration_seconds_bucket": {"operation", "category", "le"},
    "db_query_errors_total": {"operation", "category"},
}
REPLICA_FAMILIES: dict[str, set[str]] = {
    "db_replica_lag_bytes": {"replica"},
    "db_replica_lag_seconds": {"replica"},
    "db_replica_in_rotation": {"replica"},
}
"""The server's when it has replicas (TASKGATE_DATABASE_REPLICA_URLS): see test_replicas.py."""
SERVER_FAMILIES: dict[str, set[str]] = {
    "db_reads_total": {"target", "reason"},
    "grpc_server_started_total": GRPC,
    "grpc_server_handled_total": GRPC | {"grpc_code"},
    "grpc_server_calls_in_flight": GRPC,
    "grpc_server_handling_seconds_bucket": GRPC | {"le"},
    "grpc_server_msg_received_total": GRPC,
    "grpc_server_msg_sent_total": GRPC,
    "redis_command_duration_seconds_bucket": {"command", "le"},
    "redis_command_errors_total": {"command"},
    "sessions_created_total": set(),
    "login_failures_total": {"reason"},
    "rate_limit_refusals_total": {"limit"},
    **TASK_FAMILIES,
    **WEBHOOK_FAMILIES,
    **DB_FAMILIES,
    **PROCESS_FAMILIES,
}
PROCESSOR_FAMILIES: dict[str, set[str]] = {
    **TASK_FAMILIES,
    "filters_used_total": {"filter"},
    **WEBHOOK_FAMILIES,
    "taskgate_processor_workers_cpu_seconds_total": set(),
    "taskgate_processor_workers_resident_memory_bytes": set(),
    "taskgate_processor_workers": set(),
    **DB_FAMILIES,
    **PROCESS_FAMILIES,
}
GATEWAY_FAMILIES: dict[str, set[str]] = {
    "taskgate_gateway_http_requests_total": {"method", "route", "status"},
    "taskgate_gateway_http_request_duration_seconds_bucket": {"method", "route", "le"},
    "taskgate_gateway_http_requests_in_flight": set(),
    "taskgate_gateway_body_bytes_held": {"share"},
    **PROCESS_FAMILIES,
}
