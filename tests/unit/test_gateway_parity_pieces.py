"""The pure parts behind the gateway's grpc-gateway parity: Go's query parsing,
the path-field filter, protojson-shaped error details."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2

from gateway import errors, transcode
from taskgate.v1 import task_service_pb2


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("a=1&b=2&a=3", {"a": ["1", "3"], "b": ["2"]}),
        ("a+b=c+d", {"a b": ["c d"]}),
        ("a%2Bb=%26", {"a+b": ["&"]}),
        ("flag&=x&&k=", {"flag": [""], "": ["x"], "k": [""]}),
        ("e=%E2%82%AC", {"e": ["€"]}),
    ],
)
def test_parse_query_as_go(raw: str, parsed: dict[str, list[str]]) -> None:
    assert transcode.parse_query(raw) == parsed


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("a=%zz", 'invalid URL escape "%zz"'),
        ("%=1", 'invalid URL escape "%"'),
        ("a=%4", 'invalid URL escape "%4"'),
        ("a=1;b=2", "invalid semicolon separator in query"),
        ("a=%ff", "not UTF-8"),
    ],
)
def test_parse_query_refuses_what_go_refuses(raw: str, why: str) -> None:
    with pytest.raises(transcode.TranscodeError, match=why):
        transcode.parse_query(raw)


def test_query_filter_has_both_name_forms() -> None:
    request = task_service_pb2.GetTaskRequest.DESCRIPTOR
    assert transcode.query_filter(request, {"task_id"}) == (("taskId",), ("task_id",))
    create = task_service_pb2.CreateTaskRequest.DESCRIPTOR
    assert transcode.query_filter(create, {"output_format", "image"}) == (
        ("image",),
        ("outputFormat",),
        ("output_format",),
    )


def _packed(message: object) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)  # type: ignore[arg-type]
    return detail


def test_details_are_written_as_protojson_with_emit_unpopulated() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="f", description="d")]
    )
    assert errors.detail_dict(_packed(bad)) == {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [
            {"field": "f", "description": "d", "reason": "", "localizedMessage": None}
        ],
    }
    assert errors.detail_dict(_packed(error_details_pb2.RetryInfo())) == {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": None,
    }
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2))
    assert errors.detail_dict(_packed(retry))["retryDelay"] == "2s"
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject="s", description="d")]
    )
    violation = errors.detail_dict(_packed(quota))["violations"][0]
    assert violation["subject"] == "s"
    assert violation["quotaValue"] == "0"  # int64 as a string
    assert violation["quotaDimensions"] == {}
    assert "futureQuotaValue" not in violation  # proto3 optional: only when set


def test_a_well_known_detail_is_under_value_and_an_unknown_one_keeps_its_bytes() -> None:
    assert errors.detail_dict(_packed(duration_pb2.Duration(seconds=1))) == {
        "@type": "type.googleapis.com/google.protobuf.Duration",
        "value": "1s",
    }
    unknown = any_pb2.Any(type_url="type.googleapis.com/x.Unknown", value=b"\x01")
    assert errors.detail_dict(unknown) == {
        "@type": "type.googleapis.com/x.Unknown",
        "value": "AQ==",
    }
