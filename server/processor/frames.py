"""The framing between a processor and its worker processes: a 4-byte length,
then a pickled tuple. Both ends are this program, over a private socketpair."""

from __future__ import annotations

import pickle
import struct
from typing import Any

HEADER = struct.Struct(">I")


def pack(message: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def unpack(body: bytes | bytearray) -> tuple[Any, ...]:
    message = pickle.loads(body)  # noqa: S301 - written by our own worker process
    assert isinstance(message, tuple)
    return message
