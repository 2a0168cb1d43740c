"""Opaque ListTasks cursors: where the last page ended, bound to its filter.

A token is base64url of a version byte, the last task's creation time (µs
since the epoch), its id, the status filter it was made for, and a checksum.
Anything that does not decode, fails the checksum, or was made for another
status filter is INVALID_ARGUMENT. The checksum guards against damaged or
hand-made tokens, not against a determined forger: a token only moves the
position within the caller's own tasks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from datetime import UTC, datetime, timedelta
from uuid import UUID

from server.errors import InvalidArgument
from server.storage.postgres.tasks import Cursor

_VERSION = 1
_LAYOUT = struct.Struct(">Bq16sB")
_CHECK_BYTES = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PERSON = b"taskgate.page"


def _check(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_CHECK_BYTES, person=_PERSON).digest()


def encode(cursor: Cursor, status_filter: int) -> str:
    micros = (cursor.created_at - _EPOCH) // timedelta(microseconds=1)
    body = _LAYOUT.pack(_VERSION, micros, cursor.id.bytes, status_filter)
    return base64.urlsafe_b64encode(body + _check(body)).rstrip(b"=").decode()


def decode(token: str, status_filter: int, field: str = "page_token") -> Cursor:
    invalid = InvalidArgument.field(
        field, "is not a page token of this listing: pass next_page_token unchanged"
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise invalid from None
    body, check = raw[:-_CHECK_BYTES], raw[-_CHECK_BYTES:]
    if len(body) != _LAYOUT.size or _check(body) != check:
        raise invalid
    version, micros, id_bytes, status = _LAYOUT.unpack(body)
    if version != _VERSION or status != status_filter:
        raise invalid
    return Cursor(created_at=_EPOCH + timedelta(microseconds=micros), id=UUID(bytes=id_bytes))
