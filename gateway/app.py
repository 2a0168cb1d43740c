"""The gateway's aiohttp application: ``create_app(settings, channel)``.

One handler serves every request. It finds the route (:mod:`gateway.routes`),
builds the request message (:mod:`gateway.transcode`), calls the method over
the shared channel with a generic multicallable made once per method, and
writes the answer: JSON, raw bytes for ``google.api.HttpBody``, or a stream
(newline-delimited JSON, or Server-Sent Events when the client asks for
``text/event-stream``). Errors become grpc-gateway's JSON body
(:mod:`gateway.errors`). ``/live``, ``/ready``, ``/openapi.json`` and ``/docs``
are served beside the API. Request bodies are read within the budgets of
:mod:`gateway.body`; the server options that cancel a handler whose client went
away, and time out slow heads, are :mod:`gateway.serving`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import swagger_ui_bundle
from aiohttp import web
from google.api import httpbody_pb2
from google.protobuf import descriptor

from gateway import errors, headers, routes, tracing, transcode
from gateway.body import BodyBudget, Reservation, has_credentials, read_body
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.health import HealthWatcher
from gateway.metrics import UNMATCHED, HttpMetrics
from gateway.openapi import build_document, product_comments
from taskgate.v1 import (
    session_service_pb2,
    task_service_pb2,
    user_service_pb2,
    webhook_service_pb2,
)
from taskgate_runtime import telemetry

log = logging.getLogger("taskgate.gateway")
access_log = logging.getLogger("taskgate.gateway.access")

PRODUCT_SERVICES: tuple[descriptor.ServiceDescriptor, ...] = (
    user_service_pb2.DESCRIPTOR.services_by_name["UserService"],
    session_service_pb2.DESCRIPTOR.services_by_name["SessionService"],
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"],
    webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"],
)
JSON = "application/json"
NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_SWAGGER_FILES = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
)
_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>taskgate API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout"
    });
  </script>
</body>
</html>
"""
HEALTH_KEY = web.AppKey("health", HealthWatcher)
GATEWAY_KEY = web.AppKey("gateway", object)


@dataclass(frozen=True)
class _Call:
    """A route's method, ready to call, and what its requests need, worked out once."""

    route: routes.Route
    unary: Callable[..., Any] | None
    stream: Callable[..., Any] | None
    label: str  # the route template: the metrics' route label
    path_setters: tuple[tuple[routes.Variable, transcode.Setter], ...]
    bound: tuple[tuple[str, ...], ...]  # field paths the query may not set, both name forms
    raw_response: bool  # google.api.HttpBody: written as it is


Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Route:
    """The metrics' and the access log's route label of a request, once it is known."""

    __slots__ = ("label",)

    def __init__(self) -> None:
        self.label = UNMATCHED


class Gateway:
    """Everything a request needs, built once."""

    def __init__(
        self,
        *,
        settings: Settings,
        channel: grpc.aio.Channel,
        services: Sequence[descriptor.ServiceDescriptor],
        comments: dict[str, str],
        metrics: HttpMetrics,
        health: HealthWatcher,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.bodies = bodies = BodyBudget(
            total=settings.body_budget_bytes, anonymous=settings.anonymous_body_budget_bytes
        )
        metrics.track_bodies(lambda: bodies.held, lambda: bodies.held_anonymous)
        route_list = routes.routes_of(services)
        self.router = routes.Router(route_list)
        self._calls = {id(route): self._callable(channel, route) for route in route_list}
        self.openapi = transcode.dumps(build_document(route_list, comments))
        self._cors = frozenset(settings.cors_origins)
        self._pages: dict[str, Page] = {
            "/live": self._live,
            "/ready": self._ready,
            "/openapi.json": self._openapi,
            "/docs": self._docs,
            "/docs/": self._docs,
        }
        swagger = Path(swagger_ui_bundle.swagger_ui_path)
        for name in _SWAGGER_FILES:
            self._pages[f"/docs/{name}"] = _static(swagger / name)

    @staticmethod
    def _callable(channel: grpc.aio.Channel, route: routes.Route) -> _Call:
        method = route.method
        kwargs: dict[str, Any] = {
            "request_serializer": method.request_class.SerializeToString,
            "response_deserializer": method.response_class.FromString,
        }
        unary = stream = None
        if method.server_streaming:
            stream = channel.unary_stream(method.grpc_path, **kwargs)
        else:
            unary = channel.unary_unary(method.grpc_path, **kwargs)
        request_type = method.descriptor.input_type
        return _Call(
            route=route,
            unary=unary,
            stream=stream,
            label=route.template.source,
            path_setters=tuple(
                (variable, transcode.path_setter(request_type, variable.field_path))
                for variable in route.template.variables
            ),
            bound=transcode.query_filter(request_type, route.bound_fields),
            raw_response=method.http_body_response,
        )

    # -- the one handler -----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = headers.request_id_from(request.headers.get("X-Request-Id"))
        extra = {"X-Request-Id": request_id}
        if self._cors:
            extra.update(self._cors_headers(request))
        route = _Route()
        status = 500
        metrics = self.metrics
        metrics.started()
        try:
            response = await self._answer(request, request_id, extra, route)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's and grpc-gateway's code for it)
            raise
        finally:
            elapsed = time.perf_counter() - started
            method = request.method if request.method in _KNOWN_METHODS else "other"
            metrics.finished(method, route.label, status, elapsed)
            telemetry.name_http_span(
                method=request.method, route=route.label, known=route.label != UNMATCHED
            )
            if access_log.isEnabledFor(logging.INFO):
                _log_access(request, route.label, status, elapsed, request_id)

    async def _answer(
        self, request: web.Request, request_id: str, extra: dict[str, str], route: _Route
    ) -> web.StreamResponse:
        """The response; ``route.label`` is set as soon as the route is known."""
        path = request.rel_url.raw_path
        oversized = headers.oversized_header(request.raw_headers)
        if oversized is not None:
            error = errors.header_too_large(oversized, headers.MAX_HEADER_FIELD_BYTES)
            return _error_response(error, extra)
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and "Access-Control-Allow-Origin" in extra
        ):
            route.label = path
            return self._preflight(request, extra)
        page = self._pages.get(path)
        if page is not None and request.method == "GET":
            route.label = path
            response = await page(request)
            response.headers.update(extra)
            return response
        found = self.router.resolve(request.method, path)
        if isinstance(found, int):
            error = errors.not_found() if found == 404 else errors.method_not_allowed()
            return _error_response(error, extra)
        call = self._calls[id(found.route)]
        route.label = call.label
        try:
            return await self._forward(request, call, found.raw_params, request_id, extra)
        except GatewayError as error:
            return _error_response(error, extra)
        except grpc.aio.AioRpcError as exc:
            trailers = headers.accepts_trailers(request.headers.get("TE"))
            return _error_response(errors.from_rpc_error(exc), extra, exc, trailers)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("internal error", extra={"fields": {"request_id": request_id}})
            return _error_response(errors.internal(), extra)

    # -- forwarding ----------------------------------------------------------------------

    async def _forward(
        self,
        request: web.Request,
        call: _Call,
        raw_params: dict[str, str],
        request_id: str,
        extra: dict[str, str],
    ) -> web.StreamResponse:
        # The body's bytes stay counted until the answer: its message is held until then.
        with self.bodies.reservation(anonymous=not has_credentials(request.headers)) as held:
            message = await self._request_message(request, call, raw_params, held)
            metadata = grpc.aio.Metadata(  # as grpc.aio keeps it: no conversion per call
                *headers.outgoing_metadata(
                    request.headers.items(),
                    request_id=request_id,
                    peer=request.remote,
                    host=request.host,
                ),
                *telemetry.carrier().items(),  # the HTTP span's traceparent (when tracing is on)
            )
            deadline = self._timeout(request, streaming=call.stream is not None)
            if call.unary is not None:
                rpc = call.unary(message, metadata=metadata, timeout=deadline)
                trailers = headers.accepts_trailers(request.headers.get("TE"))
                return await self._unary(rpc, call, extra, trailers=trailers)
            assert call.stream is not None
            rpc = call.stream(message, metadata=metadata, timeout=deadline)
            streamer = _Streamer(request, call.route, rpc, extra, self.settings.sse_keepalive)
            return await streamer.run()

    async def _request_message(
        self, request: web.Request, call: _Call, raw_params: dict[str, str], held: Reservation
    ) -> Any:
        route = call.route
        message = route.method.request_class()
        try:
            if route.body:
                body = await read_body(
                    request,
                    held,
                    max_bytes=self.settings.max_body_bytes,
                    time_limit=self.settings.body_timeout,
                )
                value = transcode.parse_json_body(body)
                del body  # the JSON value holds what is needed; the raw bytes can go
                transcode.apply_body(message, route.body, value)
                del value
            for variable, setter in call.path_setters:  # path values win over the body's
                setter(message, routes.decode_variable(raw_params[variable.name], variable))
            raw_query = request.rel_url.raw_query_string
            if route.body != "*" and raw_query:
                transcode.apply_query(message, transcode.parse_query(raw_query), call.bound)
        except routes.MalformedEscape as exc:
            raise errors.malformed_path(str(exc)) from None
        except (transcode.TranscodeError, routes.PathError) as exc:
            raise errors.invalid_argument(str(exc)) from None
        return message

    def _timeout(self, request: web.Request, *, streaming: bool) -> float | None:
        value = request.headers.get("Grpc-Timeout")
        if value is not None:
            return headers.parse_grpc_timeout(value)
        if streaming:
            return self.settings.stream_timeout or None
        return self.settings.default_timeout

    async def _unary(
        self, rpc: Any, call: _Call, extra: dict[str, str], *, trailers: bool
    ) -> web.Response:
        reply = await rpc
        metadata = headers.response_headers(
            await rpc.initial_metadata(), await rpc.trailing_metadata() if trailers else None
        )
        if call.raw_response:
            body = reply.data
            content_type = reply.content_type or "application/octet-stream"
        else:
            body = transcode.dumps(transcode.response_value(reply, call.route.response_body))
            content_type = JSON
        if not metadata:  # the usual case: the headers in one go
            return web.Response(body=body, headers={"Content-Type": content_type, **extra})
        response = web.Response(body=body, headers={"Content-Type": content_type})
        _add_headers(response, metadata, extra)
        return response

    # -- the other pages -----------------------------------------------------------------

    async def _live(self, request: web.Request) -> web.StreamResponse:
        return _json_response({"status": "alive"})

    async def _ready(self, request: web.Request) -> web.StreamResponse:
        if self.health.serving:
            return _json_response({"status": "SERVING"})
        return _json_response({"status": "NOT_SERVING"}, status=503)

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(body=self.openapi)
        response.headers["Content-Type"] = JSON
        return response

    async def _docs(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=_DOCS_PAGE, content_type="text/html")

    # -- CORS ----------------------------------------------------------------------------

    def _cors_headers(self, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin")
        if origin is None or not self._cors or (origin not in self._cors and "*" not in self._cors):
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": "X-Request-Id, WWW-Authenticate",
            "Vary": "Origin",
        }

    def _preflight(self, request: web.Request, extra: dict[str, str]) -> web.Response:
        allowed = self.router.allowed(request.rel_url.raw_path)
        response = web.Response(status=204 if allowed else 404)
        response.headers.update(extra)
        response.headers["Access-Control-Allow-Methods"] = ", ".join(allowed or ["GET"])
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested:
            response.headers["Access-Control-Allow-Headers"] = requested
        response.headers["Access-Control-Max-Age"] = "600"
        return response


class _Streamer:
    """Writes a server stream: NDJSON ``{"result": …}`` lines, SSE events, or raw bytes."""

    def __init__(
        self,
        request: web.Request,
        route: routes.Route,
        rpc: Any,
        extra: dict[str, str],
        keepalive: float,
    ) -> None:
        self.request = request
        self.route = route
        self.rpc = rpc
        self.extra = extra
        self.keepalive = keepalive
        accept = request.headers.get("Accept", "")
        self.sse = EVENT_STREAM in accept
        self.raw = route.method.http_body_response and not self.sse
        self.content_type = NDJSON if NDJSON in accept else JSON
        self.sent = 0

    async def run(self) -> web.StreamResponse:
        try:
            first = await self.rpc.read()  # an error here is answered as a plain error
            response = await self._prepare(first)
            await self._pump(response, first)
            await response.write_eof()
            return response
        except ConnectionError as exc:
            # The client hung up while a message was on its way to it: the end aiohttp
            # gives the handler when it notices first (handler_cancellation), so the
            # call is a 499 and a cancelled span, not a 500 with a traceback.
            raise asyncio.CancelledError from exc
        finally:
            if not self.rpc.done():
                self.rpc.cancel()

    async def _prepare(self, first: Any) -> web.StreamResponse:
        response = web.StreamResponse()
        if self.sse:
            response.headers["Content-Type"] = EVENT_STREAM
            response.headers["Cache-Control"] = "no-cache"
            response.headers["X-Accel-Buffering"] = "no"
        elif self.raw and isinstance(first, httpbody_pb2.HttpBody):
            response.headers["Content-Type"] = first.content_type or "application/octet-stream"
        else:
            response.headers["Content-Type"] = self.content_type
        _add_headers(response, headers.response_headers(await self.rpc.initial_metadata()), {})
        response.headers.update(self.extra)
        await response.prepare(self.request)
        return response

    async def _pump(self, response: web.StreamResponse, message: Any) -> None:
        while message is not grpc.aio.EOF:
            await response.write(self._chunk(message))
            try:
                message = await self._next(response)
            except grpc.aio.AioRpcError as exc:
                if self.raw:
                    self._cut_off()
                    return
                await response.write(self._error_chunk(errors.from_rpc_error(exc)))
                return
        if self.sse:
            await response.write(b"event: end\ndata: {}\n\n")

    async def _next(self, response: web.StreamResponse) -> Any:
        if not self.sse:
            return await self.rpc.read()
        read = asyncio.ensure_future(self.rpc.read())
        try:
            while True:
                done, _ = await asyncio.wait({read}, timeout=self.keepalive)
                if done:
                    return read.result()
                await response.write(b": keep-alive\n\n")
        finally:
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await read

    def _chunk(self, message: Any) -> bytes:
        if self.raw:
            data: bytes = message.data
            return data
        line = transcode.dumps(
            {"result": transcode.response_value(message, self.route.response_body)}
        )
        self.sent += 1
        if self.sse:
            return b"id: %d\ndata: %s\n\n" % (self.sent, line)
        return line + b"\n"

    def _error_chunk(self, error: GatewayError) -> bytes:
        line = transcode.dumps({"error": error.status_dict()})
        if self.sse:
            return b"event: error\ndata: %s\n\n" % line
        return line + b"\n"

    def _cut_off(self) -> None:
        """A raw body has no room for an error, and its 200 is already sent: the
        connection is dropped before the body's end, so the client sees a broken
        download (a chunked body without its last chunk), never a short file."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()


def _static(path: Path) -> Page:
    async def serve(request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(path)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    return serve


def _json_response(value: Any, status: int = 200) -> web.Response:
    response = web.Response(body=transcode.dumps(value), status=status)
    response.headers["Content-Type"] = JSON
    return response


def _add_headers(
    response: web.StreamResponse, pairs: Iterable[tuple[str, str]], extra: dict[str, str]
) -> None:
    for name, value in pairs:
        response.headers.add(name, value)
    response.headers.update(extra)


def _error_response(
    error: GatewayError,
    extra: dict[str, str],
    exc: grpc.aio.AioRpcError | None = None,
    trailers: bool = False,
) -> web.Response:
    response = web.Response(body=error.body(), status=error.status)
    response.headers["Content-Type"] = JSON
    pairs: list[tuple[str, str]] = list(error.response_headers().items())
    if exc is not None:
        trailing = exc.trailing_metadata() if trailers else None
        pairs += headers.response_headers(exc.initial_metadata(), trailing)
    _add_headers(response, pairs, extra)
    return response


def _log_access(
    request: web.Request, route: str, status: int, elapsed: float, request_id: str
) -> None:
    access_log.info(
        "%s %s %d",
        request.method,
        request.rel_url.raw_path,
        status,
        extra={
            "fields": {
                "method": request.method,
                "path": request.rel_url.raw_path,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "request_id": request_id,
                "peer": request.remote,
            }
        },
    )


def create_app(
    settings: Settings,
    channel: grpc.aio.Channel,
    *,
    services: Sequence[descriptor.ServiceDescriptor] = PRODUCT_SERVICES,
    comments: dict[str, str] | None = None,
    metrics: HttpMetrics | None = None,
    health_service: str = "",
) -> web.Application:
    """The gateway in front of ``channel``; the health watch runs while the app runs."""
    health = HealthWatcher(channel, service=health_service)
    gateway = Gateway(
        settings=settings,
        channel=channel,
        services=services,
        comments=product_comments() if comments is None else comments,
        metrics=HttpMetrics() if metrics is None else metrics,
        health=health,
    )
    app = web.Application(
        client_max_size=settings.max_body_bytes,  # bodies: gateway.body
        # room for the gateway to answer a long header itself, with the JSON body
        handler_args={"max_field_size": headers.PARSER_FIELD_BYTES},
        middlewares=[tracing.middleware()] if telemetry.enabled() else [],
    )
    app[HEALTH_KEY] = health
    app[GATEWAY_KEY] = gateway
    app.router.add_route("*", r"/{tail:[\s\S]*}", gateway.handle)  # any path, newlines too

    async def start_health(_: web.Application) -> None:
        health.start()

    async def stop_health(_: web.Application) -> None:
        await health.stop()

    app.on_startup.append(start_health)
    app.on_cleanup.append(stop_health)
    return app
