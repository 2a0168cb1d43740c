"""The grpc server's channel options, from the settings: sizes, flow control,
idle and age limits, keepalive enforcement.

- ``grpc.max_receive_message_length`` is server-wide: the largest message of any
  method (an image upload). grpc checks it on the message's length prefix, and
  again after decompression, so a compressed request inflates to no more than
  that. Smaller per-method limits are enforced by :mod:`server.interceptors.reading`.
- BDP probing is off and the stream window fixed, so a call whose request the
  server has not started to read holds at most one window of it: grpc's BDP
  estimator otherwise opens megabytes per stream on a fast link.
- Idle connections are closed after ``max_connection_idle`` (also those that
  never sent a request, or never finished the HTTP/2 preface); every connection
  is recycled after ``max_connection_age`` (+ a grace for calls in flight);
  clients that ping too often are sent away.

:func:`bind` adds the gRPC port, plaintext or TLS (:mod:`server.tls`), and
:func:`health_server` is the server behind the optional plaintext port that
serves grpc.health.v1 and nothing else: the kubelet's gRPC probe and Docker's HEALTHCHECK speak no
TLS and hold no client certificate, and a probe there never waits behind user
calls for one of ``TASKGATE_MAX_CONCURRENT_RPCS``.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2_grpc

from server.config import Settings
from server.tls import ServerTls

Options = list[tuple[str, int]]
HEALTH_PORT_CALLS = 64


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def server_options(settings: Settings) -> Options:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # grpc's default SO_REUSEPORT lets a second server share a busy
        # port without a word; a taken address must be an error.
        ("grpc.so_reuseport", 0),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", settings.grpc_stream_window_bytes),
        ("grpc.max_connection_idle_ms", _ms(settings.grpc_max_connection_idle)),
        ("grpc.max_connection_age_ms", _ms(settings.grpc_max_connection_age)),
        ("grpc.max_connection_age_grace_ms", _ms(settings.grpc_max_connection_age_grace)),
        ("grpc.keepalive_time_ms", _ms(settings.grpc_keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(settings.grpc_keepalive_timeout)),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            _ms(settings.grpc_min_ping_interval),
        ),
        ("grpc.keepalive_permit_without_calls", int(settings.grpc_keepalive_without_calls)),
        ("grpc.http2.max_ping_strikes", settings.grpc_max_ping_strikes),
    ]


def bind(server: grpc.aio.Server, settings: Settings) -> tuple[int, ServerTls | None]:
    """The port bound at ``TASKGATE_GRPC_ADDR``, and the TLS files when TLS is on.

    TlsFileError when a file is unusable; RuntimeError when the address cannot be bound.
    """
    if not settings.tls:
        return server.add_insecure_port(settings.grpc_addr), None
    tls = ServerTls(settings)
    return server.add_secure_port(settings.grpc_addr, tls.credentials()), tls


def health_server(health: health_pb2_grpc.HealthServicer) -> grpc.aio.Server:
    """A server of ``health`` alone, for the plaintext ``TASKGATE_GRPC_HEALTH_ADDR``."""
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4096)],
        # Probes are a few at a time; a Watch stream each from anything else is bounded too.
        maximum_concurrent_rpcs=HEALTH_PORT_CALLS,
    )
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    return server
