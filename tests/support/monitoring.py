"""monitoring/ as the tests read it: the dashboard's queries, the rules'
expressions, and the metric families the processes are agreed to export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.promql import usage

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "taskgate.json"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
JOBS = ("server", "processor", "gateway")
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})


@dataclass(frozen=True)
class Family:
    """A metric family as PromQL names it (counters with ``_total``)."""

    name: str
    kind: str  # counter, gauge or histogram
    labels: frozenset[str]
    jobs: frozenset[str]

    def series(self) -> dict[str, frozenset[str]]:
        """The series names this family exposes, each with its labels."""
        if self.kind == "histogram":
            return {
                f"{self.name}_bucket": self.labels | {"le"},
                f"{self.name}_sum": self.labels,
                f"{self.name}_count": self.labels,
            }
        return {self.name: self.labels}


def _family(name: str, kind: str, labels: str, jobs: str) -> Family:
    return Family(name, kind, frozenset(labels.split()), frozenset(jobs.split()))


_GRPC = "grpc_type grpc_service grpc_method"
_TASKS = "server processor"
_ALL = " ".join(JOBS)

# What the code exports (issue 9's contract). The stack test checks it against
# what the real processes serve; test_metrics_contract checks that the
# dashboard and rules use nothing else.
CONTRACT: tuple[Family, ...] = (
    _family("grpc_server_started_total", "counter", _GRPC, "server"),
    _family("grpc_server_handled_total", "counter", f"{_GRPC} grpc_code", "server"),
    _family("grpc_server_handling_seconds", "histogram", _GRPC, "server"),
    _family("grpc_server_msg_received_total", "counter", _GRPC, "server"),
    _family("grpc_server_msg_sent_total", "counter", _GRPC, "server"),
    _family("tasks_created_total", "counter", "", "server"),
    _family("tasks_finished_total", "counter", "status", _TASKS),
    _family("tasks_retried_total", "counter", "reason", _TASKS),
    _family("processing_time_seconds", "histogram", "", _TASKS),
    _family("filters_used_total", "counter", "filter", _TASKS),
    _family("task_queue_wait_seconds", "histogram", "", _TASKS),
    _family("task_claim_to_start_seconds", "histogram", "", _TASKS),
    _family("tasks_queue_depth", "gauge", "", _TASKS),
    _family("tasks_running", "gauge", "", _TASKS),
    _family("tasks_oldest_pending_age_seconds", "gauge", "", _TASKS),
    _family("db_pool_connections_idle", "gauge", "pool", _TASKS),
    _family("db_pool_connections_in_use", "gauge", "pool", _TASKS),
    _family("db_pool_connections_max", "gauge", "pool", _TASKS),
    _family("db_pool_requests_waiting", "gauge", "pool", _TASKS),
    _family("db_query_duration_seconds", "histogram", "operation", _TASKS),
    _family("db_query_errors_total", "counter", "operation", _TASKS),
    _family("redis_command_duration_seconds", "histogram", "command", "server"),
    _family("redis_command_errors_total", "counter", "command", "server"),
    _family("sessions_created_total", "counter", "", "server"),
    _family("login_failures_total", "counter", "reason", "server"),
    _family("rate_limit_refusals_total", "counter", "limit", "server"),
    _family("process_cpu_seconds_total", "counter", "", _ALL),
    _family("process_resident_memory_bytes", "gauge", "", _ALL),
    _family("taskgate_gateway_http_requests_total", "counter", "method route status", "gateway"),
    _family(
        "taskgate_gateway_http_request_duration_seconds", "histogram", "method route", "gateway"
    ),
    _family("taskgate_gateway_http_requests_in_flight", "gauge", "", "gateway"),
)
# Prometheus's own series about each target.
SCRAPE_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}


def contract_series() -> dict[str, frozenset[str]]:
    """Every series name of the contract (and ``up``), with its labels."""
    series = dict(SCRAPE_SERIES)
    for family in CONTRACT:
        series.update(family.series())
    return series


def rule_groups() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        yield from yaml.safe_load(path.read_text())["groups"]


def recording_rules() -> dict[str, str]:
    """``{recorded name: expression}``."""
    return {r["record"]: r["expr"] for g in rule_groups() for r in g["rules"] if "record" in r}


def alert_rules() -> dict[str, dict[str, Any]]:
    """``{alert name: rule}``."""
    return {r["alert"]: r for g in rule_groups() for r in g["rules"] if "alert" in r}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> dict[str, str]:
    """``{"panel title / refId": expr}`` for every query of every panel."""
    queries: dict[str, str] = {}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            queries[f"{panel['title']} / {target['refId']}"] = target["expr"]
    return queries


def recorded_labels() -> dict[str, frozenset[str]]:
    """The labels each recorded series keeps: those its expression groups by,
    or those of the recorded series it is built from."""
    rules = recording_rules()
    labels: dict[str, frozenset[str]] = {}
    for name, expr in rules.items():
        used = usage(expr)
        inherited = set().union(*(labels.get(n, frozenset()) for n in used.names & set(rules)))
        labels[name] = frozenset((used.grouping - {"le"}) | inherited)
    return labels


def grafana_variables(expr: str, rate_interval: str) -> str:
    """``expr`` with Grafana's interval variables replaced, as Grafana would send it."""
    for variable in ("$__rate_interval", "$__interval", "$__range"):
        expr = expr.replace(variable, rate_interval)
    return expr


def exported_series(exposition: str) -> dict[str, frozenset[str] | None]:
    """``{series name: label names}`` of a /metrics page, over all its samples. A
    labelled family with no child yet has only its HELP and TYPE lines: its series
    are there with labels None (unknown until a first sample)."""
    from prometheus_client.parser import text_string_to_metric_families

    series: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(exposition):
        if not family.samples:
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
            for suffix in suffixes.get(family.type, ("",)):
                series.setdefault(family.name + suffix, None)
        for sample in family.samples:
            labels = series.get(sample.name) or set()
            series[sample.name] = labels | set(sample.labels)
    return {name: None if labels is None else frozenset(labels) for name, labels in series.items()}


def contract_gaps(job: str, exported: dict[str, frozenset[str] | None]) -> list[str]:
    """What ``job``'s contract families lack in ``exported``: missing series or other labels."""
    gaps: list[str] = []
    for family in CONTRACT:
        if job not in family.jobs:
            continue
        for name, labels in family.series().items():
            if name not in exported:
                gaps.append(f"{job} does not export {name}")
            elif (got_labels := exported[name]) is not None and got_labels != labels:
                got, want = sorted(got_labels), sorted(labels)
                gaps.append(f"{job} exports {name} with {got}, not {want}")
    return gaps
