"""The dashboard and the rules use only the metric families and labels the
processes export (the lists tests/e2e/test_observability.py asserts on the real
processes' /metrics): a renamed metric or label breaks a test, not a dashboard."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.monitoring import (
    DASHBOARD,
    MONITORING,
    TARGET_LABELS,
    alert_rules,
    contract_series,
    dashboard,
    dashboard_queries,
    recorded_labels,
    recording_rules,
)
from tests.support.promql import usage

EXPRESSIONS = {
    **{f"dashboard: {title}": expr for title, expr in dashboard_queries().items()},
    **{f"record: {name}": expr for name, expr in recording_rules().items()},
    **{f"alert: {name}": rule["expr"] for name, rule in alert_rules().items()},
}


def _problems(expr: str) -> list[str]:
    known = contract_series()
    recorded = recorded_labels()
    used = usage(expr)
    problems: list[str] = []
    available = set(TARGET_LABELS)
    for selector in used.selectors:
        labels = recorded.get(selector.name, known.get(selector.name))
        if labels is None:
            problems.append(f"{selector.name}: neither exported nor recorded")
            continue
        available |= labels
        stray = set(selector.matchers) - labels - TARGET_LABELS
        if stray:
            problems.append(f"{selector.name} has no label {sorted(stray)}")
    stray_grouping = used.grouping - available
    if stray_grouping:
        problems.append(f"groups by {sorted(stray_grouping)}, which no series here has")
    return problems


@pytest.mark.parametrize("expr", EXPRESSIONS.values(), ids=EXPRESSIONS.keys())
def test_each_query_uses_exported_families_and_labels(expr: str) -> None:
    assert _problems(expr) == []


def test_a_renamed_metric_or_label_is_caught() -> None:
    assert _problems("rate(grpc_server_handled_totals[5m])") == [
        "grpc_server_handled_totals: neither exported nor recorded"
    ]
    assert _problems('tasks_finished_total{state="failed"}') == [
        "tasks_finished_total has no label ['state']"
    ]
    assert _problems("sum by (method) (rate(grpc_server_handled_total[5m]))") == [
        "groups by ['method'], which no series here has"
    ]


def test_the_dashboard_has_queries_for_every_area() -> None:
    names = set().union(*(usage(e).names for e in dashboard_queries().values()))
    for wanted in (
        "grpc_method:grpc_server_handled:rate5m",
        "grpc_method:grpc_server_error_ratio:rate5m",
        # the p99 straight from the histogram: its exemplars lead to traces
        "grpc_server_handling_seconds_bucket",
        "grpc_server_calls_in_flight",
        "processing_time_seconds_bucket",
        "taskgate_processor_workers_cpu_seconds_total",
        "taskgate_processor_workers_resident_memory_bytes",
        "filters_used_total",
        "taskgate:tasks_queue_depth:max",
        "taskgate:tasks_oldest_pending_age_seconds:max",
        "status:tasks_finished:rate5m",
        "db_pool_connections_in_use",
        "redis_command_duration_seconds_bucket",
        "db_query_duration_seconds_bucket",
        "taskgate_gateway_http_requests_total",
    ):
        assert wanted in names


def test_dashboard_panels_use_the_provisioned_datasource_and_known_variables() -> None:
    provisioned = yaml.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            variables = set(re.findall(r"\$\w+", target["expr"]))
            assert variables <= {"$__rate_interval"}, (panel["title"], variables)
    provider = yaml.safe_load(
        (MONITORING / "grafana/provisioning/dashboards/taskgate.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert DASHBOARD.parent.name == "dashboards"


def test_every_alert_has_a_severity_and_a_runbook() -> None:
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"], name
        description = rule["annotations"]["description"]
        for part in ("What it means:", "Check:", "Do:"):
            assert part in description, (name, part)


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load((MONITORING / "tests/alerts_test.yml").read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    assert fired == set(alert_rules())
    assert quiet == set(alert_rules())
