"""The OTEL_* variables decide whether a process traces, and how it samples."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.sdk.trace import sampling

from taskgate_runtime import logs, telemetry

JAEGER = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),  # no endpoint: nothing exported, nothing set up
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317", "OTEL_SDK_DISABLED": "false"}, True),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317", "OTEL_TRACES_EXPORTER": "none"},
            False,
        ),
    ],
)
def test_tracing_is_wanted_only_with_an_endpoint_and_not_disabled(
    environ: dict[str, str], expected: bool
) -> None:
    assert telemetry.wanted(environ) is expected


def test_the_default_sampler_follows_the_parent_and_keeps_one_root_in_a_hundred() -> None:
    sampler = telemetry._sampler({})
    assert isinstance(sampler, sampling.ParentBased)
    assert "TraceIdRatioBased{0.01}" in sampler.get_description()  # type: ignore[no-untyped-call]


def test_the_ratio_argument_alone_changes_the_default_ratio() -> None:
    sampler = telemetry._sampler({"OTEL_TRACES_SAMPLER_ARG": "1.0"})
    assert "TraceIdRatioBased{1.0}" in sampler.get_description()


def test_a_named_sampler_is_the_sdks_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    sampler = telemetry._sampler({"OTEL_TRACES_SAMPLER": "always_on"})
    assert sampler is sampling.ALWAYS_ON


def test_outside_a_span_there_are_no_ids_and_no_exemplar() -> None:
    assert telemetry.current_ids() is None
    assert telemetry.exemplar() is None
    assert telemetry.carrier() == {}
    assert telemetry.context_of({}) is None
    assert not telemetry.enabled()


def test_a_log_line_inside_a_span_carries_its_ids_next_to_the_request_id() -> None:
    import logging

    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")  # not the global provider
    formatter = logs.JsonFormatter("test")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    token = logs.request_id.set("req-1")
    try:
        assert "trace_id" not in json.loads(formatter.format(record))
        with tracer.start_as_current_span("work") as span:
            line = json.loads(formatter.format(record))
            ids = span.get_span_context()
    finally:
        logs.request_id.reset(token)
    assert line["trace_id"] == f"{ids.trace_id:032x}"
    assert line["span_id"] == f"{ids.span_id:016x}"
    assert line["request_id"] == "req-1"


def test_every_redis_call_names_its_command_for_its_span() -> None:
    """Each name a Redis repository gives ``_call`` has its db.operation.name."""
    import re
    from pathlib import Path

    from server.storage.redis import client

    root = Path(client.__file__).parent
    names = {
        name
        for path in root.glob("*.py")
        for name in re.findall(r"self\._call\(\"(\w+)\"\)", path.read_text())
    }
    assert names  # the pattern still finds the calls
    assert names <= set(client.OPERATIONS), names - set(client.OPERATIONS)


def test_the_resource_names_the_service_and_hashes_as_the_sdks_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.resources import Resource

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    resource = telemetry._resource("taskgate-server")
    assert resource.attributes["service.name"] == "taskgate-server"
    plain = Resource(resource.attributes, resource.schema_url)
    assert hash(resource) == hash(plain)  # the SDK's value
    assert resource == plain
    # Computed once: hashing it again serializes nothing (the SDK's dumps each time).
    from opentelemetry.sdk import resources

    serialized: list[object] = []
    dumps = json.dumps

    def counted(*args: Any, **kwargs: Any) -> str:
        serialized.append(args)
        return dumps(*args, **kwargs)

    monkeypatch.setattr(resources, "dumps", counted)
    assert len({hash(resource) for _ in range(3)}) == 1
    assert serialized == []
    hash(plain)
    assert len(serialized) == 1  # the check would see a hash made per span
    # The encoder's grouping: every span of the process lands under one resource.
    assert len({resource: 1, Resource(resource.attributes, resource.schema_url): 2}) == 1

    monkeypatch.setenv("OTEL_SERVICE_NAME", "taskgate-api-eu")
    assert telemetry._resource("taskgate-server").attributes["service.name"] == "taskgate-api-eu"
