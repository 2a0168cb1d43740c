"""WebhookService over gRPC: proto ↔ model, nothing else."""

from __future__ import annotations

from datetime import datetime

import grpc
from google.protobuf.duration_pb2 import Duration

from server.context import current_user
from server.errors import InvalidArgument
from server.models import TaskEventType
from server.rpc.convert import timestamp
from server.rpc.convert_tasks import EVENT_TYPE_TO_PROTO
from server.services.webhooks import WebhookService
from server.storage.postgres.webhooks import AttemptRecord, Endpoint
from server.webhooks.signing import webhook_id
from taskgate.v1 import webhook_service_pb2 as pb
from taskgate.v1 import webhook_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[object, object]
_EVENT_TYPES: dict[int, TaskEventType] = {int(v): k for k, v in EVENT_TYPE_TO_PROTO.items()}
_BY_NAME = {kind.value: int(number) for kind, number in EVENT_TYPE_TO_PROTO.items()}


def event_types_from_proto(values: list[int]) -> list[TaskEventType]:
    try:
        return [_EVENT_TYPES[value] for value in values]
    except KeyError:
        raise InvalidArgument.field("endpoint.event_types", "holds an unknown event type") from None


def _maybe(message: pb.WebhookEndpoint, field: str, value: datetime | None) -> None:
    if value is not None:
        getattr(message, field).CopyFrom(timestamp(value))


def endpoint_to_proto(endpoint: Endpoint) -> pb.WebhookEndpoint:
    message = pb.WebhookEndpoint(
        endpoint_id=str(endpoint.id),
        url=endpoint.url,
        event_types=[_BY_NAME[name] for name in endpoint.event_types],  # type: ignore[misc]
        state=(
            pb.WEBHOOK_ENDPOINT_STATE_ENABLED
            if endpoint.disabled_at is None
            else pb.WEBHOOK_ENDPOINT_STATE_DISABLED
        ),
        disabled_reason=endpoint.disabled_reason or "",
        create_time=timestamp(endpoint.created_at),
    )
    _maybe(message, "disable_time", endpoint.disabled_at)
    _maybe(message, "failing_since_time", endpoint.failing_since)
    _maybe(message, "previous_secret_expire_time", endpoint.previous_secret_expires_at)
    return message


def attempt_to_proto(record: AttemptRecord) -> pb.WebhookAttempt:
    message = pb.WebhookAttempt(
        event_id=record.event_id,
        webhook_id=webhook_id(record.event_id),
        attempt=record.attempt,
        start_time=timestamp(record.started_at),
        http_status=record.http_status or 0,
        error=record.error or "",
    )
    if record.latency_ms is not None:
        latency = Duration()
        latency.FromNanoseconds(round(record.latency_ms * 1e6))
        message.latency.CopyFrom(latency)
    return message


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    def __init__(self, *, webhooks: WebhookService) -> None:
        self._webhooks = webhooks

    async def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: Context
    ) -> pb.CreateWebhookEndpointResponse:
        endpoint, secret = await self._webhooks.create(
            current_user(),
            url=request.endpoint.url,
            event_types=event_types_from_proto(list(request.endpoint.event_types)),
        )
        return pb.CreateWebhookEndpointResponse(endpoint=endpoint_to_proto(endpoint), secret=secret)

    async def GetWebhookEndpoint(
        self, request: pb.GetWebhookEndpointRequest, context: Context
    ) -> pb.GetWebhookEndpointResponse:
        endpoint = await self._webhooks.get(current_user(), request.endpoint_id)
        return pb.GetWebhookEndpointResponse(endpoint=endpoint_to_proto(endpoint))

    async def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: Context
    ) -> pb.ListWebhookEndpointsResponse:
        endpoints = await self._webhooks.of_user(current_user())
        return pb.ListWebhookEndpointsResponse(endpoints=[endpoint_to_proto(e) for e in endpoints])

    async def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, context: Context
    ) -> pb.DeleteWebhookEndpointResponse:
        await self._webhooks.delete(current_user(), request.endpoint_id)
        return pb.DeleteWebhookEndpointResponse()

    async def RotateWebhookEndpointSecret(
        self, request: pb.RotateWebhookEndpointSecretRequest, context: Context
    ) -> pb.RotateWebhookEndpointSecretResponse:
        endpoint, secret = await self._webhooks.rotate(current_user(), request.endpoint_id)
        return pb.RotateWebhookEndpointSecretResponse(
            endpoint=endpoint_to_proto(endpoint), secret=secret
        )

    async def ListWebhookAttempts(
        self, request: pb.ListWebhookAttemptsRequest, context: Context
    ) -> pb.ListWebhookAttemptsResponse:
        records = await self._webhooks.attempts(
            current_user(), request.endpoint_id, request.page_size
        )
        return pb.ListWebhookAttemptsResponse(attempts=[attempt_to_proto(r) for r in records])
