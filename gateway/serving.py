"""The gateway's HTTP server: the aiohttp options that guard it against slow and
vanished clients, in one place for ``python -m gateway`` and the tests.

- ``handler_cancellation``: when a client's connection closes, its request's
  handler is cancelled, and with it the upstream gRPC call (a unary call, and a
  stream of NDJSON or Server-Sent Events alike) — at once, not at the next write.
  (aiohttp's test server turns this on by itself; its ``AppRunner`` does not.)
- ``keepalive_timeout`` is the header timeout: a connection must deliver the
  complete head of a request within ``header_timeout`` of opening, or of the end
  of its previous response, else it is closed. Bytes that trickle in do not
  extend it (aiohttp's timer is not reset by data), so a slowloris client that
  never finishes its headers holds its connection that long and no longer. An
  idle keep-alive connection is closed after the same time: a proxy in front
  should close its idle upstream connections sooner.
- The body timeout is the handler's (:mod:`gateway.body`).
"""

from __future__ import annotations

import ssl
from typing import Any

from aiohttp import web

from taskgate_runtime.settings import parse_addr


def runner_options(*, header_timeout: float) -> dict[str, Any]:
    return {
        "handler_cancellation": True,
        "keepalive_timeout": header_timeout,
        "access_log": None,  # the gateway writes its own access log
        "handle_signals": False,
    }


async def start_site(
    app: web.Application,
    addr: str,
    *,
    header_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """``app`` served on ``addr`` (port 0: a free one, see ``runner.addresses``), over
    HTTPS with ``ssl_context``."""
    runner = web.AppRunner(app, **runner_options(header_timeout=header_timeout))
    await runner.setup()
    host, port = parse_addr(addr)
    try:
        await web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
