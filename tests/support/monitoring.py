"""monitoring/ as the tests read it: the dashboard's queries, the rules'
expressions, and the metric families the processes export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.metric_families import (
    GATEWAY_FAMILIES,
    PROCESSOR_FAMILIES,
    REPLICA_FAMILIES,
    SERVER_FAMILIES,
)
from tests.support.promql import usage

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "taskgate.json"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
JOBS = ("server", "processor", "gateway")
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})


# What each process exports (tests/support/metric_families.py).
EXPORTED_BY_JOB: dict[str, dict[str, set[str]]] = {
    "server": SERVER_FAMILIES | REPLICA_FAMILIES,
    "processor": PROCESSOR_FAMILIES,
    "gateway": GATEWAY_FAMILIES,
}
# Prometheus's own series about each target.
SCRAPE_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}


def contract_series() -> dict[str, frozenset[str]]:
    """Every series name the processes export (and ``up``), with its labels; a
    histogram's ``_sum`` and ``_count`` beside its ``_bucket``."""
    series = dict(SCRAPE_SERIES)
    for families in EXPORTED_BY_JOB.values():
        for name, labels in families.items():
            series[name] = frozenset(labels)
            if name.endswith("_bucket"):
                base = name.removesuffix("_bucket")
                series[f"{base}_sum"] = series[f"{base}_count"] = frozenset(labels - {"le"})
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
