"""Clients of taskgate's gRPC API, over the generated stubs (package ``taskgate``).

- :class:`Client` (sync, with py-grpc-prometheus client metrics) and
  :class:`AsyncClient` (grpc.aio) for internal services: deadlines, retries of
  UNAVAILABLE through the channel's service config, the session token as call
  credentials;
- :mod:`taskgate_client.filters`: ``blur:radius=2`` → ``Filter`` messages;
- :mod:`taskgate_client.cli`: the ``taskgate`` command.
"""

from taskgate_client.aio import AsyncClient
from taskgate_client.sync import Client
from taskgate_client.transport import TlsFiles, Transport

__all__ = ["AsyncClient", "Client", "TlsFiles", "Transport"]
