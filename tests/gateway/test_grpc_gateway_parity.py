"""Where grpc-gateway v2 is strict, the gateway is too: percent-encoding, path
fields in the query, duplicate JSON fields, nesting depth, binary metadata,
``Grpc-Metadata-Authorization``, trailers only on ``TE: trailers``, and long
headers answered with the JSON error body. (README: Differences from grpc-gateway.)"""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest
from aiohttp import ClientResponse
from yarl import URL

from gateway import headers
from gateway.transcode import MAX_JSON_DEPTH
from tests.gateway.conftest import Client
from tests.gateway.test_product import bearer, login, register

# -- percent-encoding ---------------------------------------------------------------------


async def get_raw(client: Client, target: str) -> ClientResponse:
    """GET with the path and query sent exactly as written (yarl would fix ``%zz``)."""
    return await client.session.get(URL(f"http://127.0.0.1:{client.port}{target}", encoded=True))


@pytest.mark.parametrize(
    "query",
    ["%zz=1", "name=%zz", "name=%", "name=a%2", "name=ok&%g1=x"],
)
async def test_malformed_query_escape_is_400(shapes: Client, query: str) -> None:
    response = await get_raw(shapes, f"/v1/echo/q?{query}")
    assert response.status == 400
    body = await response.json()
    assert body["code"] == 3
    assert body["message"].startswith("invalid URL escape")


async def test_semicolon_in_query_is_400_as_in_go(shapes: Client) -> None:
    response = await get_raw(shapes, "/v1/echo/q?name=a;i32=1")
    assert response.status == 400
    assert (await response.json())["message"] == "invalid semicolon separator in query"


async def test_well_formed_escapes_in_the_query_decode(shapes: Client) -> None:
    response = await get_raw(shapes, "/v1/echo/q?name=%E2%82%AC+x&long%5Ffield%5Fname=y")
    assert response.status == 200, await response.text()
    request = (await response.json())["request"]
    assert request["name"] == "€ x"
    assert request["longFieldName"] == "y"


@pytest.mark.parametrize("path", ["/v1/echo/%zz", "/v1/echo/a%2", "/v1/files/a/%G0"])
async def test_malformed_path_escape_is_400_unknown(shapes: Client, path: str) -> None:
    """grpc-gateway's mux: a MalformedSequenceError, HTTP 400 with code UNKNOWN."""
    response = await get_raw(shapes, path)
    assert response.status == 400
    body = await response.json()
    assert body["code"] == 2
    assert body["message"].startswith("malformed path escape")


async def test_slash_escape_in_a_single_segment_value_is_decoded_after_routing(
    shapes: Client,
) -> None:
    """http.proto's rule (grpc-gateway's UnescapingModeAllExceptSlash): the path is
    split on real slashes only, then a one-segment value is decoded fully."""
    response = await get_raw(shapes, "/v1/echo/a%2Fb")
    assert response.status == 200
    assert (await response.json())["request"]["id"] == "a/b"
    multi = await get_raw(shapes, "/v1/files/a%2Fb/c")
    assert (await multi.json())["request"]["name"] == "a%2Fb/c"


async def test_malformed_path_escape_in_the_product(http: Client) -> None:
    response = await get_raw(http, "/v1/tasks/%zz")
    assert response.status == 400
    assert (await response.json())["code"] == 2


# -- path fields in the query ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["userId", "user_id"])
async def test_a_path_field_in_the_query_is_dropped_under_either_name(
    http: Client, key: str
) -> None:
    user = await register(http)
    token = await login(http, user["username"])
    response = await http.get(f"/v1/users/me?{key}=someone-else", headers=bearer(token))
    assert response.status == 200, await response.text()
    assert (await response.json())["user"]["userId"] == user["userId"]


async def test_nested_path_fields_in_the_query_are_dropped(shapes: Client) -> None:
    response = await shapes.get("/v1/nested/outer/deeper/inner?nested.deeper.name=x&nested.count=4")
    request = (await response.json())["request"]
    assert request["nested"]["deeper"]["name"] == "inner"
    assert request["nested"]["count"] == 4  # a sibling of a bound field is not bound


# -- JSON bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"i32": 1, "i32": 2}', "duplicate field 'i32'"),
        (b'{"longFieldName": "a", "long_field_name": "b"}', "long_field_name twice"),
        (b'{"nested": {"name": "a", "name": "b"}}', "duplicate field 'name'"),
        (b'{"nested": {"deeper": {"name": "a"}, "deeper": {}}}', "duplicate field 'deeper'"),
        (b'{"textChoice": "a", "text_choice": "b"}', "text_choice twice"),
    ],
)
async def test_a_field_given_twice_is_400(shapes: Client, body: bytes, why: str) -> None:
    response = await shapes.post(
        "/v1/echo", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    payload = await response.json()
    assert payload["code"] == 3
    assert why in payload["message"]


async def test_a_duplicate_key_in_the_product_is_400(http: Client) -> None:
    user = await register(http)
    token = await login(http, user["username"])
    response = await http.post(
        "/v1/tasks",
        data=b'{"idempotencyKey": "a", "idempotencyKey": "b"}',
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert "duplicate field 'idempotencyKey'" in (await response.json())["message"]


def _nested(depth: int, kind: str) -> bytes:
    if kind == "objects":
        return b'{"unknown": ' * (depth - 1) + b"{}" + b"}" * (depth - 1)
    return b'{"unknown": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("kind", ["objects", "arrays"])
async def test_nesting_up_to_the_limit_is_accepted(shapes: Client, kind: str) -> None:
    response = await shapes.post(
        "/v1/echo", data=_nested(MAX_JSON_DEPTH, kind), headers={"Content-Type": "application/json"}
    )
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    ("depth", "kind"),
    [(MAX_JSON_DEPTH + 1, "objects"), (MAX_JSON_DEPTH + 1, "arrays"), (5_000, "objects")],
)
async def test_nesting_past_the_limit_is_400(
    shapes: Client, depth: int, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = await shapes.post(
            "/v1/echo", data=_nested(depth, kind), headers={"Content-Type": "application/json"}
        )
    assert response.status == 400
    assert (await response.json())["message"] == (
        f"the request body is nested more than {MAX_JSON_DEPTH} levels deep"
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_60k_nested_arrays_anonymous_is_400_without_a_traceback(
    http: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = await http.post(
            "/v1/users", data=b"[" * 60_000, headers={"Content-Type": "application/json"}
        )
    assert response.status == 400
    assert "nested more than" in (await response.json())["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# -- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "decoded"),
    [("AAE=", b"\x00\x01"), ("AAE", b"\x00\x01"), ("", b""), ("+/8=", b"\xfb\xff")],
)
async def test_binary_metadata_takes_standard_base64_padded_or_not(
    shapes: Client, value: str, decoded: bytes
) -> None:
    response = await shapes.get("/v1/echo/h", headers={"Grpc-Metadata-Blob-Bin": value})
    assert response.status == 200, await response.text()
    metadata = (await response.json())["metadata"]
    assert base64.b64decode(metadata.get("blob-bin", "")) == decoded


@pytest.mark.parametrize("value", ["not base64!", "A", "AA=E", "AAE==", "-_8", "AAE=AAE="])
async def test_binary_metadata_that_is_not_base64_is_400(shapes: Client, value: str) -> None:
    response = await shapes.get("/v1/echo/h", headers={"Grpc-Metadata-Blob-Bin": value})
    assert response.status == 400
    body = await response.json()
    assert body["code"] == 3
    assert body["message"].startswith("invalid binary header Grpc-Metadata-Blob-Bin")


async def test_grpc_metadata_authorization_is_forwarded_as_authorization(shapes: Client) -> None:
    response = await shapes.get(
        "/v1/echo/h", headers={"Grpc-Metadata-Authorization": "Bearer via-metadata"}
    )
    assert response.status == 200
    assert (await response.json())["metadata"]["authorization"] == "Bearer via-metadata"
    same = await shapes.get(
        "/v1/echo/h",
        headers={"Authorization": "Bearer t", "Grpc-Metadata-Authorization": "Bearer t"},
    )
    assert (await same.json())["metadata"]["authorization"] == "Bearer t"  # once


async def test_two_different_authorizations_are_400(shapes: Client) -> None:
    response = await shapes.get(
        "/v1/echo/h",
        headers={"Authorization": "Bearer one", "Grpc-Metadata-Authorization": "Bearer two"},
    )
    assert response.status == 400
    assert "two different authorization" in (await response.json())["message"]


async def test_grpc_metadata_authorization_logs_in_to_the_product(http: Client) -> None:
    user = await register(http)
    token = await login(http, user["username"])
    response = await http.get(
        "/v1/users/me", headers={"Grpc-Metadata-Authorization": f"Bearer {token}"}
    )
    assert response.status == 200


async def test_trailers_only_when_the_client_accepts_them(shapes: Client) -> None:
    plain = await shapes.get("/v1/echo/h")
    assert plain.status == 200
    assert not [name for name in plain.headers if name.startswith("Grpc-Trailer-")]
    assert plain.headers["Grpc-Metadata-X-Echo"] == "initial"  # headers still are
    asked = await shapes.get("/v1/echo/h", headers={"TE": "deflate, Trailers"})
    assert asked.headers["Grpc-Trailer-X-Trailer"] == "trailing"


async def test_error_trailers_only_when_the_client_accepts_them(shapes: Client) -> None:
    plain = await shapes.get("/v1/fail/5")
    assert plain.status == 404
    assert "Grpc-Trailer-X-Failed" not in plain.headers
    asked = await shapes.get("/v1/fail/5", headers={"TE": "trailers"})
    assert asked.headers["Grpc-Trailer-X-Failed"] == "trailing"
    assert "Grpc-Trailer-Grpc-Status-Details-Bin" not in asked.headers


def _line_of(length: int, name: str = "X-Long") -> dict[str, str]:
    return {name: "v" * (length - len(name) - 2)}  # "Name: value" is `length` bytes


async def test_a_header_at_the_limit_is_accepted(shapes: Client) -> None:
    response = await shapes.get("/v1/echo/h", headers=_line_of(headers.MAX_HEADER_FIELD_BYTES))
    assert response.status == 200


@pytest.mark.parametrize(
    "length", [headers.MAX_HEADER_FIELD_BYTES + 1, headers.PARSER_FIELD_BYTES - 100]
)
async def test_a_header_past_the_limit_is_431_with_the_json_body(
    shapes: Client, length: int
) -> None:
    response = await shapes.get("/v1/echo/h", headers=_line_of(length))
    assert response.status == 431
    assert response.headers["Content-Type"] == "application/json"
    body = await response.json()
    assert body == {
        "code": 8,
        "message": f"the header X-Long is longer than {headers.MAX_HEADER_FIELD_BYTES} bytes",
        "details": [],
    }


async def test_a_header_past_the_parsers_room_is_aiohttps_own_400(shapes: Client) -> None:
    """Past PARSER_FIELD_BYTES aiohttp's parser answers before the gateway sees the
    request (README: Differences from grpc-gateway)."""
    assert shapes.port is not None
    value = "v" * (headers.PARSER_FIELD_BYTES + 10)
    request = f"GET /v1/echo/h HTTP/1.1\r\nHost: x\r\nX-Long: {value}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", shapes.port)
    try:
        writer.write(request)
        reply = await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert reply.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert b"text/plain" in reply
