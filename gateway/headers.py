"""HTTP headers ↔ gRPC metadata, as grpc-gateway's ``runtime/context.go`` does.

In:

- ``Authorization`` → ``authorization``.
- ``Grpc-Metadata-<Key>`` → ``<key>`` (``Grpc-Metadata-Authorization`` too, as
  grpc-gateway passes it); a ``-Bin`` key's value is standard base64, padded or
  not, and anything else is a 400.
- IANA permanent headers (``User-Agent``, ``Accept``…) → ``grpcgateway-<key>``,
  except ``Authorization`` and ``Cookie``, which are credentials.
- ``Grpc-Timeout`` (``10S``, ``500m``…) → the call's deadline.
- ``X-Request-Id`` (when sane, else a new one) → ``x-request-id``.
- ``X-Forwarded-For`` with the client's address appended → ``x-forwarded-for``;
  ``X-Forwarded-Host`` (or ``Host``) → ``x-forwarded-host``.

Out: the response's initial metadata as ``Grpc-Metadata-<Key>`` headers (binary
values in base64) and, for unary calls whose client sent ``TE: trailers``, its
trailing metadata as ``Grpc-Trailer-<Key>`` headers.

A header line (name and value) longer than :data:`MAX_HEADER_FIELD_BYTES` is
answered 431 with the JSON error body; aiohttp's parser is given room up to
:data:`PARSER_FIELD_BYTES` so that the gateway, not the parser, answers.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
from collections.abc import Iterable

from gateway.errors import STATUS_DETAILS_KEY, invalid_argument

Metadata = list[tuple[str, str | bytes]]

METADATA_PREFIX = "grpc-metadata-"
TRAILER_PREFIX = "Grpc-Trailer-"
MAX_HEADER_FIELD_BYTES = 8190  # aiohttp's own default per header line
PARSER_FIELD_BYTES = 16384  # past this aiohttp's parser answers (text/plain 400)
REQUEST_ID = "x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_METADATA_KEY = re.compile(r"[0-9a-z_.\-]+")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Sent by grpc or the gateway itself; a client may not set them.
_RESERVED = frozenset({"content-type", "te", "user-agent", "grpc-timeout", "x-request-id"})
PERMANENT_HEADERS = frozenset(
    {
        "accept",
        "accept-charset",
        "accept-language",
        "accept-ranges",
        "cache-control",
        "content-type",
        "date",
        "expect",
        "from",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-schedule-tag-match",
        "if-unmodified-since",
        "max-forwards",
        "origin",
        "pragma",
        "referer",
        "user-agent",
        "via",
        "warning",
    }
)


def request_id_from(value: str | None) -> str:
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return f"{random.getrandbits(128):032x}"  # an id, not a secret: no system call


def parse_grpc_timeout(value: str) -> float:
    """Seconds of a ``Grpc-Timeout`` value (at most 8 digits and a unit)."""
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None:
        raise invalid_argument(f"malformed Grpc-Timeout header: {value!r}")
    return int(match.group(1)) * _TIMEOUT_UNITS[match.group(2)]


def _metadata_pair(key: str, value: str) -> tuple[str, str | bytes]:
    if not _METADATA_KEY.fullmatch(key) or key.startswith("grpc-") or key in _RESERVED:
        raise invalid_argument(f"Grpc-Metadata-{key}: not an allowed metadata key")
    if key.endswith("-bin"):
        return key, _decode_bin(key, value)
    if not _PRINTABLE.fullmatch(value):
        raise invalid_argument(f"Grpc-Metadata-{key}: the value is not printable ASCII")
    return key, value


def _decode_bin(key: str, value: str) -> bytes:
    """grpc-gateway's ``decodeBinHeader``: standard base64, padded (a length that is
    a multiple of 4) or raw; anything else is INVALID_ARGUMENT."""
    try:
        data = value.encode("ascii")
        if len(data) % 4:
            if b"=" in data:
                raise ValueError("padding in an unpadded value")
            data += b"=" * (-len(data) % 4)
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        name = _canonical(METADATA_PREFIX + key)
        raise invalid_argument(f"invalid binary header {name}: not base64") from None


def oversized_header(raw_headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The name of the first header line longer than ``MAX_HEADER_FIELD_BYTES``."""
    for name, value in raw_headers:
        if len(name) + len(value) + 2 > MAX_HEADER_FIELD_BYTES:
            return name.decode("latin-1")
    return None


def accepts_trailers(te: str | None) -> bool:
    """grpc-gateway's ``requestAcceptsTrailers``: the request's TE mentions trailers."""
    return te is not None and "trailers" in te.lower()


def outgoing_metadata(
    headers: Iterable[tuple[str, str]],
    *,
    request_id: str,
    peer: str | None,
    host: str | None,
) -> Metadata:
    """The metadata of the gRPC call for a request's headers (see the module docstring)."""
    metadata: Metadata = [(REQUEST_ID, request_id)]
    forwarded: dict[str, str] = {}
    credentials: str | None = None
    for name, value in headers:
        key = name.lower()
        if key == "authorization" or key == _METADATA_AUTHORIZATION:
            if credentials is not None and credentials != value:
                raise invalid_argument("two different authorization headers: send one")
            if credentials is None:
                metadata.append(("authorization", value))
            credentials = value
        elif key.startswith(METADATA_PREFIX):
            metadata.append(_metadata_pair(key[len(METADATA_PREFIX) :], value))
        elif key in PERMANENT_HEADERS:
            if _PRINTABLE.fullmatch(value):
                metadata.append(("grpcgateway-" + key, value))
        elif key in _FORWARDED:
            previous = forwarded.get(key)
            forwarded[key] = value if previous is None else f"{previous}, {value}"
    metadata.extend(_forwarded(forwarded, peer=peer, host=host))
    return metadata


_FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-host"})
_METADATA_AUTHORIZATION = METADATA_PREFIX + "authorization"


def _forwarded(
    forwarded: dict[str, str], *, peer: str | None, host: str | None
) -> list[tuple[str, str | bytes]]:
    pairs: list[tuple[str, str | bytes]] = []
    forwarded_host = forwarded.get("x-forwarded-host") or host
    if forwarded_host and _PRINTABLE.fullmatch(forwarded_host):
        pairs.append(("x-forwarded-host", forwarded_host))
    chain = forwarded.get("x-forwarded-for")
    if peer:
        chain = peer if not chain else f"{chain}, {peer}"
    if chain and _PRINTABLE.fullmatch(chain):
        pairs.append(("x-forwarded-for", chain))
    return pairs


def _canonical(key: str) -> str:
    """``x-request-id`` → ``X-Request-Id``, as Go writes header names."""
    return "-".join(part[:1].upper() + part[1:] for part in key.split("-"))


def _header_value(key: str, value: str | bytes) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def response_headers(
    initial: Iterable[tuple[str, str | bytes]] | None,
    trailing: Iterable[tuple[str, str | bytes]] | None = None,
) -> list[tuple[str, str]]:
    headers = [("Grpc-Metadata-" + key, _header_value(key, value)) for key, value in initial or ()]
    headers.extend(
        (TRAILER_PREFIX + key, _header_value(key, value))
        for key, value in trailing or ()
        if key != STATUS_DETAILS_KEY
    )
    return headers
