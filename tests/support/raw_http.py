"""A raw HTTP/1.1 client on a socket: for clients that misbehave on purpose
(slow heads and bodies, connections dropped mid-stream)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from tests.support.clients import PASSWORD, new_username


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> Answer:
        """The next response, read to the end of its Content-Length."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await self.reader.readexactly(length)
        return Answer(int(status_line.split()[1]), headers, body)

    async def read_until(self, marker: bytes) -> bytes:
        return await self.reader.readuntil(marker)

    async def closed_by_peer(self) -> bool:
        """True once the server has closed the connection (EOF, or a reset)."""
        try:
            return await self.reader.read(65536) == b""
        except ConnectionError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def post_head(path: str, length: int, *, token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {length}\r\n\r\n"
    ).encode()


def get_head(path: str, *, token: str | None = None, accept: str = "application/json") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: gateway\r\nAccept: {accept}\r\n{auth}\r\n".encode()


def registration(size: int) -> bytes:
    """A CreateUser body of exactly ``size`` bytes (JSON padded with spaces)."""
    body = json.dumps({"username": new_username(), "password": PASSWORD}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))
