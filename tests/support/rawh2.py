"""A raw HTTP/2 client (the h2 package) for what grpc's own clients refuse to send:
metadata that is not valid UTF-8, or a connection that says nothing after its preface."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import h2.exceptions


class RawH2:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True, header_encoding=None, validate_outbound_headers=False
            )
        )

    @classmethod
    async def connect(cls, port: int) -> RawH2:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        client.conn.initiate_connection()
        await client.flush()
        return client

    async def flush(self) -> None:
        self._writer.write(self.conn.data_to_send())
        await self._writer.drain()

    async def unary(
        self, path: str, message: bytes, metadata: list[tuple[bytes, bytes]]
    ) -> dict[bytes, bytes]:
        """One gRPC call; returns its response headers and trailers together."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *metadata,
        ]
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, b"\x00" + len(message).to_bytes(4, "big") + message)
        self.conn.end_stream(stream_id)
        await self.flush()
        received: dict[bytes, bytes] = {}
        while True:
            data = await self._reader.read(65536)
            if not data:
                return received
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:  # data after the server's GOAWAY
                return received
            for event in events:
                if isinstance(event, h2.events.ConnectionTerminated):
                    return received
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    received.update(dict(event.headers or ()))
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    await self.flush()
                    return received
            await self.flush()

    async def closed_by_peer(self) -> bool:
        """Waits until the server closes the connection (True), answering its pings."""
        while True:
            data = await self._reader.read(65536)
            if not data:
                return True
            try:
                self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:  # data after the server's GOAWAY
                continue
            if events_pending := self.conn.data_to_send():
                self._writer.write(events_pending)
                await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()
