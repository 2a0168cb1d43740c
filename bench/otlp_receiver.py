"""``python -m bench.otlp_receiver PORT``: an OTLP/gRPC trace receiver that counts.

What ``make bench-tracing``'s processes export to, over the network, as they
would to Jaeger or a collector: opentelemetry-proto's ``TraceService`` served
with grpc.aio on 127.0.0.1:PORT, in a process of its own (its CPU is not the
gateway's or the server's). On SIGTERM it prints ``spans N requests M`` and exits.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Counter(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0
        self.requests = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests += 1
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans += len(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def serve(port: int) -> None:
    counter = Counter()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 2**20)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(counter, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(1)
    print(f"spans {counter.spans} requests {counter.requests}", flush=True)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
