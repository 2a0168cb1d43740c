"""``python -m bench.minimal_forwarder``: the calibration floor for ``make bench-gateway``.

The least an HTTP-to-gRPC forwarder in Python can do for the benchmark's call:
aiohttp's low-level ``web.Server`` on uvloop, one grpc.aio channel, the path's
last segment as the id, the Authorization header passed on, and protobuf's
``MessageToJson`` for the answer. No routing table, no query parameters, no
error mapping, no metrics, no request ids. It answers GetTask
(``/v1/tasks/{id}``) or GetUser (``/v1/users/me``), and ``/ready``.

Its CPU per request, measured in the same run as the gateway's, tells what the
machine charges for the loopback, the event loop and grpc.aio's threads; the
issue's reference puts it at about 360 us on a quiet 2-core machine.
"""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import uvloop
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from taskgate.v1 import task_service_pb2, user_service_pb2


async def serve() -> None:
    host, _, port = os.environ["TASKGATE_GATEWAY_ADDR"].rpartition(":")
    channel = grpc.aio.insecure_channel(os.environ["TASKGATE_GATEWAY_UPSTREAM"])
    get_task = channel.unary_unary(
        "/taskgate.v1.TaskService/GetTask",
        request_serializer=task_service_pb2.GetTaskRequest.SerializeToString,
        response_deserializer=task_service_pb2.GetTaskResponse.FromString,
    )
    get_user = channel.unary_unary(
        "/taskgate.v1.UserService/GetUser",
        request_serializer=user_service_pb2.GetUserRequest.SerializeToString,
        response_deserializer=user_service_pb2.GetUserResponse.FromString,
    )

    async def handle(request: web.BaseRequest) -> web.Response:
        if request.path == "/ready":
            return web.Response(text="ok")
        metadata = (("authorization", request.headers.get("Authorization", "")),)
        reply: Message
        if request.path.startswith("/v1/tasks/"):
            task_id = request.path.rpartition("/")[2]
            reply = await get_task(
                task_service_pb2.GetTaskRequest(task_id=task_id), metadata=metadata, timeout=30
            )
        else:
            reply = await get_user(
                user_service_pb2.GetUserRequest(user_id="me"), metadata=metadata, timeout=30
            )
        return web.Response(
            body=json_format.MessageToJson(reply, indent=None).encode(),
            content_type="application/json",
        )

    server = await asyncio.get_running_loop().create_server(
        web.Server(handle, access_log=None), host, int(port)
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    await channel.close()


if __name__ == "__main__":
    uvloop.run(serve())
