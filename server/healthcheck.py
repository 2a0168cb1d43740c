"""``python -m server.healthcheck [SERVICE]``: exit 0 while this machine's server says SERVING.

The image's HEALTHCHECK. It reads the server's own settings and asks its
plaintext health port (``TASKGATE_GRPC_HEALTH_ADDR``) when there is one, else
its gRPC port, which must then be plaintext: with TLS on, a probe inside the
container has no CA to verify the server with (nor a client certificate under
mTLS), so a TLS server needs the health port for this check.

Exit status: 0 SERVING, 1 anything else (the reason on stderr).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import Settings
from taskgate_runtime.settings import ConfigError, parse_addr

TIMEOUT = 3.0
ALL_INTERFACES = {"0.0.0.0", "::"}  # noqa: S104 - listening addresses, not bound here


def target(settings: Settings) -> str:
    """Where to ask: the health port, else a plaintext gRPC port; ValueError with TLS alone."""
    addr = settings.grpc_health_addr
    if addr is None:
        if settings.tls:
            raise ValueError(
                f"the server speaks TLS: set {settings.variable('grpc_health_addr')} "
                "(a plaintext port serving only health) for this check"
            )
        addr = settings.grpc_addr
    host, port = parse_addr(addr)
    host = "127.0.0.1" if host in ALL_INTERFACES else host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check(address: str, service: str = "") -> str:
    """The status name the server gives ``service`` ("" for the server as a whole)."""
    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    service = args[0] if args else ""
    try:
        address = target(Settings.from_env())
        status = check(address, service)
    except (ConfigError, ValueError) as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        code, details = getattr(exc, "code", None), getattr(exc, "details", None)
        reason = f"{code().name}: {details()}" if callable(code) and callable(details) else exc
        print(f"healthcheck: {address}: {reason}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"healthcheck: {address}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
