"""The test-only ShapesService: its proto compiled at test time, and a server for it.

``tests/gateway/proto/gwtest/v1/shapes.proto`` is compiled with grpc_tools'
protoc into a descriptor set (with comments), added to the default descriptor
pool, and served through generic handlers: no generated code is committed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import grpc_tools
from google.api import annotations_pb2, httpbody_pb2
from google.protobuf import (
    descriptor,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    message_factory,
    timestamp_pb2,
    wrappers_pb2,
)
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_tools import protoc

# shapes.proto's imports must be in the default pool before it is added.
_IMPORTS = (duration_pb2, field_mask_pb2, timestamp_pb2, wrappers_pb2, httpbody_pb2)
PROTO_ROOT = Path(__file__).resolve().parent / "proto"
SERVICE = "gwtest.v1.ShapesService"


def _googleapis_root() -> str:
    return str(Path(annotations_pb2.__file__).resolve().parent.parent.parent)


@cache
def compiled() -> bytes:
    """The serialized FileDescriptorSet of shapes.proto, with source info."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "shapes.binpb")
        status = protoc.main(
            [
                "protoc",
                f"-I{PROTO_ROOT}",
                f"-I{_googleapis_root()}",
                f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                "gwtest/v1/shapes.proto",
            ]
        )
        if status != 0:
            raise RuntimeError("protoc failed on shapes.proto")
        return Path(out).read_bytes()


@cache
def service_descriptor() -> descriptor.ServiceDescriptor:
    pool = descriptor_pool.Default()
    files = descriptor_pb2.FileDescriptorSet.FromString(compiled())
    for file in files.file:
        try:
            pool.FindFileByName(file.name)
        except KeyError:
            pool.Add(file)
    return pool.FindServiceByName(SERVICE)


def message_class(name: str) -> Any:
    service_descriptor()
    pool = descriptor_pool.Default()
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"gwtest.v1.{name}"))


def _metadata_dict(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
        out[key] = text if key not in out else f"{out[key]},{text}"
    return out


class Shapes:
    """The servicer: plain coroutines registered through generic handlers."""

    def __init__(self) -> None:
        self.echo_response = message_class("EchoResponse")
        self.pick_response = message_class("PickResponse")
        self.count_response = message_class("CountResponse")

    async def echo(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.send_initial_metadata(
            (("x-echo", "initial"), ("x-echo-bin", b"\x00\x01\xfe"))
        )
        context.set_trailing_metadata((("x-trailer", "trailing"),))
        remaining = context.time_remaining()
        return self.echo_response(
            request=request,
            metadata=_metadata_dict(context),
            time_remaining=remaining or 0.0,
        )

    def picker(self, name: str) -> Any:
        async def pick(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return self.pick_response(method=name, path=request.path)

        return pick

    async def fail(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        code = next(c for c in grpc.StatusCode if c.value[0] == request.code)
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="code", description="asked for")
            ]
        )
        status = status_pb2.Status(code=request.code, message=request.message or code.name)
        status.details.add().Pack(bad_request)
        await context.abort(
            code,
            status.message,
            (("grpc-status-details-bin", status.SerializeToString()), ("x-failed", "trailing")),
        )

    async def count(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        interval = request.interval.ToTimedelta().total_seconds()
        for number in range(1, request.count + 1):
            if request.fail_after and number > request.fail_after:
                await context.abort(grpc.StatusCode.ABORTED, f"failed after {request.fail_after}")
            if interval:
                await asyncio.sleep(interval)
            yield self.count_response(number=number)

    async def download(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request.name == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such file")
        content_type = "image/png" if request.name.endswith(".png") else "text/plain"
        return httpbody_pb2.HttpBody(content_type=content_type, data=b"\x89PNG raw " + b"x" * 10)

    async def download_chunks(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        yield httpbody_pb2.HttpBody(content_type="image/png", data=b"first chunk;")
        if request.name == "broken":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the store went away")
        yield httpbody_pb2.HttpBody(content_type="image/png", data=b"second chunk")

    def handler(self) -> grpc.GenericRpcHandler:
        service = service_descriptor()
        behaviours: dict[str, Any] = {
            "Echo": self.echo,
            "PickDeep": self.picker("PickDeep"),
            "PickVariable": self.picker("PickVariable"),
            "PickLiteral": self.picker("PickLiteral"),
            "Fail": self.fail,
            "Count": self.count,
            "Download": self.download,
            "DownloadChunks": self.download_chunks,
        }
        handlers = {}
        for method in service.methods:
            request = message_factory.GetMessageClass(method.input_type)
            response = message_factory.GetMessageClass(method.output_type)
            factory = (
                grpc.unary_stream_rpc_method_handler
                if method.server_streaming
                else grpc.unary_unary_rpc_method_handler
            )
            handlers[method.name] = factory(
                behaviours[method.name],
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)


@asynccontextmanager
async def shapes_server() -> AsyncIterator[tuple[int, health_aio.HealthServicer]]:
    """A grpc.aio server with ShapesService and health (SERVING) on a free port."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Shapes().handler(),))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port, health
    finally:
        await server.stop(0)
