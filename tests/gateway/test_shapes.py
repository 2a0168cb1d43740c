"""Conformance, table-driven, through a real gateway in front of the test-only
ShapesService: every path, body, query, JSON, header, error and stream rule."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import pytest

from tests.gateway.conftest import ORIGIN, Client

# -- paths and bodies -------------------------------------------------------------------

PATHS: list[tuple[str, str, Any, dict[str, Any]]] = [
    # method, path, JSON body, expected subset of response.request
    ("GET", "/v1/echo/abc", None, {"id": "abc"}),
    ("GET", "/v1/echo/a%20b%2Fc", None, {"id": "a b/c"}),
    ("POST", "/v1/echo", {"id": "x", "i32": 5}, {"id": "x", "i32": 5}),
    ("POST", "/v1/echo", {"long_field_name": "p", "i64": 7}, {"longFieldName": "p", "i64": "7"}),
    ("POST", "/v1/echo", {"longFieldName": "j", "unknown": 1}, {"longFieldName": "j"}),
    ("PUT", "/v1/echo/from-path", {"id": "from-body", "flag": True}, {"id": "from-path"}),
    ("PATCH", "/v1/echo/p1", {"name": "n", "count": 3}, {"id": "p1", "nested": {"name": "n"}}),
    ("POST", "/v1/echo/t1/tags", ["a", "b"], {"id": "t1", "tags": ["a", "b"]}),
    ("POST", "/v1/echo/loud:shout", {"i32": 1}, {"id": "loud", "i32": 1}),
    ("GET", "/v1/files/a/b/c.txt", None, {"name": "a/b/c.txt"}),
    ("GET", "/v1/files/a%2Fb/c", None, {"name": "a%2Fb/c"}),
    ("GET", "/v1/shelves/s1/books/b2", None, {"name": "shelves/s1/books/b2"}),
    (
        "GET",
        "/v1/nested/outer/deeper/inner",
        None,
        {"nested": {"name": "outer", "count": 0, "deeper": {"name": "inner"}}},
    ),
]


def _subset(expected: Any, actual: Any) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), actual
        for key, value in expected.items():
            assert key in actual, f"{key} missing from {actual}"
            _subset(value, actual[key])
    else:
        assert actual == expected


@pytest.mark.parametrize(("method", "path", "body", "expected"), PATHS)
async def test_paths_and_bodies(
    shapes: Client, method: str, path: str, body: Any, expected: dict[str, Any]
) -> None:
    response = await shapes.request(method, path, json=body)
    assert response.status == 200, await response.text()
    _subset(expected, (await response.json())["request"])


@pytest.mark.parametrize(
    ("path", "method", "variable"),
    [
        ("/v1/pick/literal", "PickLiteral", "path"),
        ("/v1/pick/one", "PickVariable", "one"),
        ("/v1/pick/one/two", "PickDeep", "one/two"),
    ],
)
async def test_precedence_by_specificity(
    shapes: Client, path: str, method: str, variable: str
) -> None:
    """PickDeep is declared first; grpc-gateway would let it win every time."""
    body = await (await shapes.get(path)).json()
    assert body["method"] == method
    if method != "PickLiteral":
        assert body["path"] == variable


async def test_response_body_field(shapes: Client) -> None:
    body = await (await shapes.get("/v1/echo/r1/request?i32=4")).json()
    assert body["id"] == "r1"
    assert body["i32"] == 4


async def test_body_query_mix(shapes: Client) -> None:
    """body: "field" takes the rest from the query; body: "*" ignores the query."""
    response = await shapes.patch("/v1/echo/q1?i32=9&flag=true", json={"name": "n"})
    request = (await response.json())["request"]
    assert (request["i32"], request["flag"], request["nested"]["name"]) == (9, True, "n")
    response = await shapes.put("/v1/echo/q2?i32=9", json={"i32": 1})
    assert (await response.json())["request"]["i32"] == 1


# -- query parameters -------------------------------------------------------------------

TIMESTAMP = "2024-05-06T07:08:09.5Z"
QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("nested.name=n&nested.count=2", {"nested": {"name": "n", "count": 2}}),
    ("nested.deeper.name=d", {"nested": {"deeper": {"name": "d"}}}),
    ("tags=a&tags=b&tags=c", {"tags": ["a", "b", "c"]}),
    ("nums=1&nums=-2", {"nums": [1, -2]}),
    ("color=COLOR_GREEN", {"color": "COLOR_GREEN"}),
    ("color=1", {"color": "COLOR_RED"}),
    ("colors=COLOR_RED&colors=2", {"colors": ["COLOR_RED", "COLOR_GREEN"]}),
    ("flag=true", {"flag": True}),
    ("flag=1", {"flag": True}),
    ("flag=F", {"flag": False}),
    (f"when={TIMESTAMP}", {"when": "2024-05-06T07:08:09.500Z"}),
    ("wait=1.5s", {"wait": "1.500s"}),
    ("wait=1h2m", {"wait": "3720s"}),
    ("wait=-250ms", {"wait": "-0.250s"}),
    ("data=" + base64.b64encode(b"\xff\x00bin").decode().replace("+", "%2B"), {"data": "/wBiaW4="}),
    ("data=_wBiaW4", {"data": "/wBiaW4="}),
    ("i64=9007199254740993", {"i64": "9007199254740993"}),
    ("u64=18446744073709551615", {"u64": "18446744073709551615"}),
    ("dbl=2.5&flt=-1", {"dbl": 2.5, "flt": -1.0}),
    ("wrapped=7", {"wrapped": 7}),
    ("mask=a.b,c", {"mask": "a.b,c"}),
    ("labels[k1]=v1&labels[k2]=v2", {"labels": {"k1": "v1", "k2": "v2"}}),
    ("text_choice=t", {"textChoice": "t"}),
    ("longFieldName=json&i32=3", {"longFieldName": "json", "i32": 3}),
    ("long_field_name=proto", {"longFieldName": "proto"}),
    ("unknown=1&nested.unknown=2&id=ignored", {"id": "q"}),
    ("name=a+b%26c", {"name": "a b&c"}),
]


@pytest.mark.parametrize(("query", "expected"), QUERIES)
async def test_query_parameters(shapes: Client, query: str, expected: dict[str, Any]) -> None:
    response = await shapes.get(f"/v1/echo/q?{query}")
    assert response.status == 200, await response.text()
    _subset(expected, (await response.json())["request"])


BAD_QUERIES = [
    ("i32=1&i32=2", "too many values"),
    ("i32=x", "not an integer"),
    ("i32=2147483648", "out of range"),
    ("flag=yes", "not a boolean"),
    ("color=PURPLE", "not a valid"),
    ("color=9", "not a valid"),
    ("when=yesterday", "RFC 3339"),
    ("wait=soon", "not a duration"),
    ("data=%%%", "not base64"),
    ("text_choice=a&number_choice=1", "oneof"),
    ("tags.x=1", "not a message"),
    ("labels[k]=1&labels[k]=2", "map"),
]


@pytest.mark.parametrize(("query", "why"), BAD_QUERIES)
async def test_bad_query_parameters(shapes: Client, query: str, why: str) -> None:
    response = await shapes.get(f"/v1/echo/q?{query}")
    assert response.status == 400
    body = await response.json()
    assert body["code"] == 3
    assert why in body["message"]
    assert body["details"] == []


# -- JSON out ---------------------------------------------------------------------------


async def test_json_out_emits_every_field(shapes: Client) -> None:
    body = await (await shapes.get("/v1/echo/z")).json()
    request = body["request"]
    assert request["i64"] == "0"
    assert request["u64"] == "0"
    assert request["color"] == "COLOR_UNSPECIFIED"
    assert request["tags"] == []
    assert request["labels"] == {}
    assert request["longFieldName"] == ""
    assert request["nested"] is None
    assert request["when"] is None
    assert body["unset"] is None
    assert "textChoice" not in request  # oneof members are written only when set


# -- errors -----------------------------------------------------------------------------

STATUSES = [
    (1, 499),
    (2, 500),
    (3, 400),
    (4, 504),
    (5, 404),
    (6, 409),
    (7, 403),
    (8, 429),
    (9, 400),
    (10, 409),
    (11, 400),
    (12, 501),
    (13, 500),
    (14, 503),
    (15, 500),
    (16, 401),
]


@pytest.mark.parametrize(("code", "status"), STATUSES)
async def test_status_table(shapes: Client, code: int, status: int) -> None:
    response = await shapes.get(f"/v1/fail/{code}?message=nope")
    assert response.status == status
    assert response.headers["Content-Type"] == "application/json"
    body = await response.json()
    assert body["code"] == code
    assert body["message"] == "nope"
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [
                # as protojson with EmitUnpopulated: an unset message field is null
                {
                    "field": "code",
                    "description": "asked for",
                    "reason": "",
                    "localizedMessage": None,
                }
            ],
        }
    ]
    assert ("WWW-Authenticate" in response.headers) == (status == 401)


ROUTING = [
    ("GET", "/nowhere", 404, 5, "Not Found"),
    ("GET", "/v1/x%0Ay", 404, 5, "Not Found"),  # a newline in the path still reaches the router
    ("GET", "/v1/echo", 501, 12, "Method Not Allowed"),
    ("DELETE", "/v1/echo/x", 501, 12, "Method Not Allowed"),
    ("GET", "/v1/echo/x:shout", 200, None, None),  # GET {id} takes "x:shout", as grpc-gateway
    ("POST", "/v1/echo/x:whisper", 501, 12, "Method Not Allowed"),  # GET /v1/echo/{id}
    ("POST", "/v2/echo/x:shout", 404, 5, "Not Found"),
    ("GET", "/v1/echo/", 404, 5, "Not Found"),
]


@pytest.mark.parametrize(("method", "path", "status", "code", "message"), ROUTING)
async def test_routing_errors(
    shapes: Client, method: str, path: str, status: int, code: int | None, message: str | None
) -> None:
    response = await shapes.request(method, path)
    assert response.status == status
    if code is not None:
        assert await response.json() == {"code": code, "message": message, "details": []}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"i32": "many"}', "does not fit"),
        (b'{"color": {}}', "does not fit"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
async def test_malformed_bodies(shapes: Client, body: bytes, why: str) -> None:
    response = await shapes.post("/v1/echo", data=body)
    assert response.status == 400
    payload = await response.json()
    assert payload["code"] == 3
    assert why in payload["message"]


async def test_empty_body_is_an_empty_message(shapes: Client) -> None:
    response = await shapes.post("/v1/echo", data=b"")
    assert response.status == 200


async def test_body_limit(shapes: Client) -> None:
    limit = 64 * 1024
    at_limit = b'{"id": "' + b"x" * (limit - 10) + b'"}'
    assert len(at_limit) == limit
    assert (await shapes.post("/v1/echo", data=at_limit)).status == 200
    response = await shapes.post("/v1/echo", data=at_limit + b" ")
    assert response.status == 413
    body = await response.json()
    assert body["code"] == 8
    assert str(limit) in body["message"]


async def test_body_limit_without_content_length(shapes: Client) -> None:
    async def chunks() -> Any:
        yield b'{"id": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    response = await shapes.post("/v1/echo", data=chunks())
    assert response.status == 413


# -- headers ----------------------------------------------------------------------------


async def test_headers_become_metadata(shapes: Client) -> None:
    response = await shapes.get(
        "/v1/echo/h",
        headers={
            "Authorization": "Bearer secret-token",
            "Grpc-Metadata-Tenant": "acme",
            "Grpc-Metadata-Blob-Bin": base64.b64encode(b"\x00\x01").decode(),
            "X-Request-Id": "req-123",
            "X-Forwarded-For": "203.0.113.9",
            "User-Agent": "conformance/1",
            "Cookie": "session=never-forwarded",
        },
    )
    assert response.status == 200
    metadata = (await response.json())["metadata"]
    assert metadata["authorization"] == "Bearer secret-token"
    assert metadata["tenant"] == "acme"
    assert metadata["blob-bin"] == base64.b64encode(b"\x00\x01").decode()
    assert metadata["x-request-id"] == "req-123"
    assert metadata["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert metadata["x-forwarded-host"].startswith("127.0.0.1:")
    assert metadata["grpcgateway-user-agent"] == "conformance/1"
    assert not any(
        "cookie" in key or "secret" in value
        for key, value in metadata.items()
        if key != "authorization"
    )
    assert response.headers["X-Request-Id"] == "req-123"


async def test_response_metadata_becomes_headers(shapes: Client) -> None:
    response = await shapes.get("/v1/echo/h", headers={"TE": "trailers"})
    assert response.headers["Grpc-Metadata-X-Echo"] == "initial"
    assert base64.b64decode(response.headers["Grpc-Metadata-X-Echo-Bin"]) == b"\x00\x01\xfe"
    assert response.headers["Grpc-Trailer-X-Trailer"] == "trailing"


async def test_request_id_is_made_when_missing_or_insane(shapes: Client) -> None:
    made = (await shapes.get("/v1/echo/h")).headers["X-Request-Id"]
    assert len(made) == 32
    response = await shapes.get("/v1/echo/h", headers={"X-Request-Id": "bad id!"})
    assert response.headers["X-Request-Id"] != "bad id!"
    assert (await response.json())["metadata"]["x-request-id"] == response.headers["X-Request-Id"]


async def test_deadlines(shapes: Client) -> None:
    default = (await (await shapes.get("/v1/echo/d")).json())["timeRemaining"]
    assert 5.0 < default <= 7.1  # the settings' default deadline (7s)
    asked = await shapes.get("/v1/echo/d", headers={"Grpc-Timeout": "500m"})
    assert 0 < (await asked.json())["timeRemaining"] <= 0.51  # grpc rounds the header up


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Grpc-Timeout", "soon"),
        ("Grpc-Timeout", "123456789S"),
        ("Grpc-Metadata-Grpc-Status", "0"),
        ("Grpc-Metadata-Bad!Key", "x"),
        ("Grpc-Metadata-Blob-Bin", "not base64!"),
    ],
)
async def test_bad_headers(shapes: Client, name: str, value: str) -> None:
    response = await shapes.get("/v1/echo/h", headers={name: value})
    assert response.status == 400
    assert (await response.json())["code"] == 3


async def test_cors(shapes: Client) -> None:
    preflight = await shapes.options(
        "/v1/echo/c",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, PATCH, PUT"
    assert preflight.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    simple = await shapes.get("/v1/echo/c", headers={"Origin": ORIGIN})
    assert simple.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-Id" in simple.headers["Access-Control-Expose-Headers"]
    stranger = await shapes.get("/v1/echo/c", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in stranger.headers
    refused = await shapes.options(
        "/v1/echo/c",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"},
    )
    assert refused.status == 501
    assert "Access-Control-Allow-Origin" not in refused.headers


# -- raw bodies and streams -------------------------------------------------------------


async def test_http_body_is_raw(shapes: Client) -> None:
    response = await shapes.get("/v1/download/picture.png")
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/png"
    assert await response.read() == b"\x89PNG raw " + b"x" * 10
    missing = await shapes.get("/v1/download/missing")
    assert missing.status == 404
    assert (await missing.json())["code"] == 5


async def test_a_streamed_http_body_is_one_raw_body(shapes: Client) -> None:
    response = await shapes.get("/v1/chunks/picture.png")
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/png"
    assert await response.read() == b"first chunk;second chunk"


async def test_a_streamed_http_body_that_fails_midway_is_cut_off_not_ended(
    shapes: Client,
) -> None:
    """The status is sent with the first chunk: a later failure can only break the
    body, so that the client sees an incomplete download, never a short 200."""
    response = await shapes.get("/v1/chunks/broken")
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_stream_as_ndjson(shapes: Client) -> None:
    response = await shapes.get("/v1/count/3")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    lines = (await response.read()).decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"result": {"number": "1"}},
        {"result": {"number": "2"}},
        {"result": {"number": "3"}},
    ]
    asked = await shapes.get("/v1/count/1", headers={"Accept": "application/x-ndjson"})
    assert asked.headers["Content-Type"] == "application/x-ndjson"


async def test_stream_chunks_are_flushed_as_they_come(shapes: Client) -> None:
    response = await shapes.get("/v1/count/2?interval=0.3s")
    first = await response.content.readline()
    assert json.loads(first) == {"result": {"number": "1"}}
    assert not response.content.at_eof()
    assert json.loads(await response.content.readline()) == {"result": {"number": "2"}}


async def test_stream_error_mid_stream_is_a_last_line(shapes: Client) -> None:
    response = await shapes.get("/v1/count/5?fail_after=2")
    assert response.status == 200
    lines = [json.loads(line) for line in (await response.read()).splitlines()]
    assert lines[:2] == [{"result": {"number": "1"}}, {"result": {"number": "2"}}]
    assert lines[2] == {"error": {"code": 10, "message": "failed after 2", "details": []}}
    assert len(lines) == 3


async def test_stream_error_before_any_message_is_a_plain_error(shapes: Client) -> None:
    response = await shapes.get("/v1/count/5?fail_after=-1&interval=x")
    assert response.status == 400
    response = await shapes.get("/v1/count/3?failAfter=0&count=9")
    assert response.status == 200  # count from the path wins; fail_after 0 never fails
    assert len((await response.read()).splitlines()) == 3


async def test_stream_empty(shapes: Client) -> None:
    response = await shapes.get("/v1/count/0")
    assert response.status == 200
    assert await response.read() == b""


def _events(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        event: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            event[key] = value
        events.append(event)
    return events


async def test_stream_as_server_sent_events(shapes: Client) -> None:
    response = await shapes.get(
        "/v1/count/2?interval=0.12s", headers={"Accept": "text/event-stream"}
    )
    assert response.headers["Content-Type"] == "text/event-stream"
    events = _events((await response.read()).decode())
    data = [e for e in events if "data" in e]
    assert data[0] == {"id": "1", "data": '{"result":{"number":"1"}}'}
    assert data[1] == {"id": "2", "data": '{"result":{"number":"2"}}'}
    assert data[2] == {"event": "end", "data": "{}"}
    assert {"": "keep-alive"} in events  # comments while the stream waits


async def test_sse_error_event(shapes: Client) -> None:
    response = await shapes.get("/v1/count/3?fail_after=1", headers={"Accept": "text/event-stream"})
    events = [e for e in _events((await response.read()).decode()) if "data" in e]
    assert events[-1]["event"] == "error"
    assert json.loads(events[-1]["data"])["error"]["code"] == 10
