"""The gateway's pure parts: settings, path templates, transcoding, errors, OpenAPI."""

from __future__ import annotations

import platform
import re
from typing import Any

import grpc
import pytest
from google.api import http_pb2
from google.protobuf import any_pb2, duration_pb2, json_format

from gateway import errors, headers, routes, transcode
from gateway.app import PRODUCT_SERVICES
from gateway.config import Settings
from gateway.memory import return_large_buffers
from gateway.metrics import HttpMetrics
from gateway.openapi import _summary, product_comments
from taskgate.v1 import task_service_pb2, user_service_pb2
from taskgate_runtime.settings import ConfigError
from tests.gateway.shapes import message_class, service_descriptor
from tests.support.json_values import without_nulls


def test_settings_defaults_and_overrides() -> None:
    assert Settings.from_env({}) == Settings()
    settings = Settings.from_env(
        {
            "TASKGATE_GATEWAY_ADDR": "0.0.0.0:8081",
            "TASKGATE_GATEWAY_UPSTREAM": "server:50051",
            "TASKGATE_GATEWAY_CORS_ORIGINS": "https://a.example, https://b.example/",
            "TASKGATE_GATEWAY_MAX_BODY_BYTES": "1024",
            "TASKGATE_GATEWAY_DEFAULT_TIMEOUT": "5s",
            "TASKGATE_GATEWAY_STREAM_TIMEOUT": "0",
            "TASKGATE_LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert (settings.max_body_bytes, settings.default_timeout) == (1024, 5.0)
    assert settings.stream_timeout == 0
    assert settings.log_level == "debug"
    assert settings.max_message_bytes == 64 * 1024 * 1024


def test_large_buffers_go_back_to_the_system_on_glibc() -> None:
    assert return_large_buffers() is (platform.libc_ver()[0] == "glibc")


def test_body_budgets_at_their_edges() -> None:
    settings = Settings.from_env(
        {
            "TASKGATE_GATEWAY_MAX_BODY_BYTES": "1000",
            "TASKGATE_GATEWAY_BODY_BUDGET_BYTES": "1000",  # one largest body
            "TASKGATE_GATEWAY_ANONYMOUS_BODY_BUDGET_BYTES": "1000",  # all of it
            "TASKGATE_GATEWAY_HEADER_TIMEOUT": "500ms",
            "TASKGATE_GATEWAY_BODY_TIMEOUT": "2m",
        }
    )
    assert (settings.body_budget_bytes, settings.anonymous_body_budget_bytes) == (1000, 1000)
    assert (settings.header_timeout, settings.body_timeout) == (0.5, 120.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_ADDR", "nowhere"),
        ("GATEWAY_UPSTREAM", "host:99999"),
        ("GATEWAY_CORS_ORIGINS", "app.example.com"),
        ("GATEWAY_MAX_BODY_BYTES", "0"),
        ("GATEWAY_MAX_BODY_BYTES", "lots"),
        ("GATEWAY_DEFAULT_TIMEOUT", "0s"),
        ("GATEWAY_SSE_KEEPALIVE", "0"),
        ("GATEWAY_HEADER_TIMEOUT", "0s"),
        ("GATEWAY_BODY_TIMEOUT", "0"),
        ("GATEWAY_BODY_BUDGET_BYTES", str(14 * 1024 * 1024 - 1)),  # below the largest body
        ("GATEWAY_ANONYMOUS_BODY_BUDGET_BYTES", str(64 * 1024 * 1024 + 1)),  # above the total
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_settings_refuse_bad_values(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"TASKGATE_{name}"):
        Settings.from_env({f"TASKGATE_{name}": value})


@pytest.mark.parametrize(
    "template",
    ["v1/x", "/v1/{x", "/v1/{x=**}/{y=**}", "/v1/{a={b}}", "/v1/x:", "/v1/{1x}", "/v1/x}"],
)
def test_bad_templates(template: str) -> None:
    with pytest.raises(routes.TemplateError):
        routes.parse_template(template)


def test_template_sorting_and_matching() -> None:
    deep = routes.parse_template("/v1/{name=**}")
    var = routes.parse_template("/v1/{name}")
    literal = routes.parse_template("/v1/x")
    verb = routes.parse_template("/v1/{name}:go")
    keys = sorted([deep, var, literal, verb], key=lambda t: t.sort_key)
    assert keys == [verb, literal, var, deep]
    assert routes.parse_template("/v1/{a=**}/tail").match("/v1/p/q/tail") == {"a": "p/q"}
    assert routes.parse_template("/v1/*/x").match("/v1/any/x") == {}


def test_router_finds_the_first_route_in_specificity_order() -> None:
    """One alternation per method picks what trying the sorted routes one by one picks."""
    for services in (PRODUCT_SERVICES, [service_descriptor()]):
        router = routes.Router(routes.routes_of(services))
        paths = ["/", "/v1/tasks", "/v1/tasks/a%2Fb:cancel", "/v1/x/y/z", "/v1/users/me"]
        for route in router.routes:
            for value in ("seg", "a/b/c", ""):
                paths.append(re.sub(r"\{[^}]*\}", value, route.template.source))
        for method in router.methods():
            for path in paths:
                first = next(
                    (
                        r
                        for r in router.routes
                        if r.http_method == method and r.template.match(path) is not None
                    ),
                    None,
                )
                found = router.resolve(method, path)
                if first is None:
                    assert isinstance(found, int)
                else:
                    assert isinstance(found, routes.Found)
                    assert found.route is first
                    assert found.raw_params == first.template.match(path)


def test_decode_variable() -> None:
    single = routes.Variable(("a",), multi_segment=False)
    multi = routes.Variable(("a",), multi_segment=True)
    assert routes.decode_variable("a%2Fb%20c", single) == "a/b c"
    assert routes.decode_variable("a%2fb/c%20d", multi) == "a%2fb/c d"
    with pytest.raises(routes.PathError):
        routes.decode_variable("%ff", single)


def test_route_table_rejects_bad_annotations() -> None:
    service = user_service_pb2.DESCRIPTOR.services_by_name["UserService"]
    method = routes.method_of(service, service.methods_by_name["GetUser"])
    with pytest.raises(routes.TemplateError, match="not a request field"):
        routes._make_route(http_pb2.HttpRule(get="/v1/{nope}"), method, 0)
    with pytest.raises(routes.TemplateError, match="body"):
        routes._make_route(http_pb2.HttpRule(post="/v1/x", body="nope"), method, 0)
    with pytest.raises(routes.TemplateError, match="singular message"):
        routes._make_route(http_pb2.HttpRule(get="/v1/{user_id.x}"), method, 0)
    with pytest.raises(routes.TemplateError, match="without a pattern"):
        routes._make_route(http_pb2.HttpRule(), method, 0)
    custom = routes._make_route(
        http_pb2.HttpRule(custom=http_pb2.CustomHttpPattern(kind="head", path="/v1/x")), method, 0
    )
    assert custom.http_method == "HEAD"


def test_go_durations() -> None:
    assert transcode.parse_go_duration("1h2m3.5s") == 3_723_500_000_000
    assert transcode.parse_go_duration("300ms") == 300_000_000
    assert transcode.parse_go_duration("-1.5us") == -1500
    with pytest.raises(transcode.TranscodeError):
        transcode.parse_go_duration("1d")


def test_query_into_product_messages() -> None:
    request = task_service_pb2.ListTasksRequest()
    transcode.apply_query(
        request,
        {"pageSize": ["5"], "page_token": ["t"], "status": ["TASK_STATUS_RUNNING"], "x": ["1"]},
        [],
    )
    assert (request.page_size, request.page_token, request.status) == (5, "t", 2)
    create = task_service_pb2.CreateTaskRequest()
    with pytest.raises(transcode.TranscodeError, match="messages cannot be query values"):
        transcode.apply_query(create, {"filters": ["x"]}, [])
    with pytest.raises(transcode.TranscodeError, match="not a valid"):
        transcode.set_field(create, ["output_format"], ["IMAGE_FORMAT_TIFF"])


def test_wrapper_and_timestamp_query_values() -> None:
    message = duration_pb2.Duration()
    with pytest.raises(transcode.TranscodeError, match="single value"):
        transcode._set_singular(
            task_service_pb2.Task(), task_service_pb2.Task.DESCRIPTOR.fields_by_name["input"], "x"
        )
    assert transcode._fill_well_known(message, "null")
    assert message.ToNanoseconds() == 0


def test_to_dict_nulls_and_maps() -> None:
    task = task_service_pb2.Task(task_id="t", filters=[task_service_pb2.Filter()])
    out = transcode.to_dict(task)
    assert out["input"] is None
    assert out["createTime"] is None
    assert out["filters"] == [{}]
    assert transcode.json_key(True) == "true"
    assert transcode.json_key(3) == "3"
    assert transcode.response_value(task, "task_id") == "t"


def test_error_details() -> None:
    unknown = any_pb2.Any(type_url="type.googleapis.com/nowhere.Thing", value=b"\x01")
    assert errors.detail_dict(unknown) == {"@type": unknown.type_url, "value": "AQ=="}
    error = errors.GatewayError(grpc.StatusCode.UNAUTHENTICATED, "who?")
    assert str(error) == "UNAUTHENTICATED: who?"
    assert error.response_headers()["WWW-Authenticate"].startswith("Bearer")
    assert errors.internal().status == 500
    assert errors._rich_details([("grpc-status-details-bin", b"\xff\xff")], error.code) == []


def test_grpc_timeout_units() -> None:
    assert headers.parse_grpc_timeout("2H") == 7200
    assert headers.parse_grpc_timeout("1500u") == pytest.approx(0.0015)
    assert headers.parse_grpc_timeout("3n") == pytest.approx(3e-9)


def test_forwarded_headers() -> None:
    metadata = headers.outgoing_metadata(
        [("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2"), ("X-Forwarded-Host", "h")],
        request_id="r",
        peer=None,
        host="ignored",
    )
    assert ("x-forwarded-for", "1.1.1.1, 2.2.2.2") in metadata
    assert ("x-forwarded-host", "h") in metadata


def test_product_comments() -> None:
    comments = product_comments()
    assert comments["taskgate.v1.TaskService.GetTaskResult"].startswith("Returns the result image")
    assert "buf:lint" not in comments["taskgate.v1.TaskService.GetTaskResult"]
    assert (
        comments["taskgate.v1.TaskStatus.TASK_STATUS_PENDING"]
        == "Accepted and waiting for a processor."
    )
    assert comments["taskgate.v1.Filter.Blur.radius"].startswith("The blur radius")
    assert _summary("Does a thing. Then more.\n\nDetails.") == "Does a thing"


def _populated_echo() -> Any:
    echo = message_class("EchoRequest")(
        id="i",
        i32=-5,
        i64=-(2**62),
        u64=2**64 - 1,
        dbl=float("nan"),
        flt=0.1,
        flag=True,
        data=b"\xff\x00",
        color=7,  # a number with no name
        tags=["a"],
        colors=[1, 2],
        nums=[1, 2],
        labels={"k": "v"},
        number_choice=3,
    )
    echo.nested.deeper.name = "d"
    echo.when.FromSeconds(1)
    echo.wait.FromNanoseconds(1_500_000_000)
    echo.wrapped.value = 4
    echo.mask.paths.extend(["a.b", "c"])
    return echo


def test_to_dict_matches_json_format() -> None:
    echo = _populated_echo()
    task = task_service_pb2.Task(
        task_id="t",
        status=task_service_pb2.TASK_STATUS_RUNNING,
        filters=[task_service_pb2.Filter()],
    )
    task.create_time.GetCurrentTime()
    response = message_class("EchoResponse")(request=echo, metadata={"a": "b"})
    for message in (echo, task, response, message_class("EchoRequest")(), duration_pb2.Duration()):
        reference = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        assert without_nulls(transcode.to_dict(message)) == reference
    out = transcode.to_dict(response)
    assert out["unset"] is None
    assert out["request"]["nested"]["deeper"] == {"name": "d"}
    assert out["request"]["flt"] == 0.1
    assert out["request"]["dbl"] == "NaN"
    assert out["request"]["color"] == 7
    assert "textChoice" not in out["request"]
    assert transcode._double(float("-inf")) == "-Infinity"
    assert transcode._float32(float("inf")) == "Infinity"


def test_in_flight_is_read_at_scrape_time() -> None:
    metrics = HttpMetrics()
    metrics.started()
    metrics.started()
    assert b"taskgate_gateway_http_requests_in_flight 2.0" in metrics.exposition()
    metrics.finished("GET", "/v1/tasks/{task_id}", 200, 0.003)
    text = metrics.exposition()
    assert b"taskgate_gateway_http_requests_in_flight 1.0" in text
    assert (
        b'taskgate_gateway_http_requests_total{method="GET",route="/v1/tasks/{task_id}",'
        b'status="200"} 1.0' in text
    )
