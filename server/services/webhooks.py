"""Registering webhook endpoints, rotating their secrets, and showing their attempts.

An endpoint's URL is checked here before it is stored (the guard's rules, and
its host must resolve to allowed addresses now), with a field violation on
``endpoint.url``. Another user's endpoint is NOT_FOUND, as if it did not exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from server.errors import FailedPrecondition, InvalidArgument, NotFound
from server.models import TaskEventType
from server.request_rules import expect_declared, field_rule
from server.services.rules import parse_uuid
from server.storage.postgres.webhooks import AttemptRecord, Endpoint, EndpointRepository
from server.webhooks import signing
from server.webhooks.guard import URL_MAX, resolution_problem, url_problem
from taskgate.v1 import webhook_service_pb2 as pb

PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 20, 100
# What the protos declare (and the OpenAPI document states) is what is checked here.
_URL = field_rule(pb.WebhookEndpoint, "url")
expect_declared(_URL.max_len == URL_MAX, "WebhookEndpoint.url's max_len of 2048")
for _request in (
    pb.GetWebhookEndpointRequest,
    pb.DeleteWebhookEndpointRequest,
    pb.RotateWebhookEndpointSecretRequest,
    pb.ListWebhookAttemptsRequest,
):
    expect_declared(field_rule(_request, "endpoint_id").uuid, "endpoint_id as a UUID")
_ATTEMPTS_PAGE_SIZE = field_rule(pb.ListWebhookAttemptsRequest, "page_size")
expect_declared(_ATTEMPTS_PAGE_SIZE.minimum == 0, "ListWebhookAttemptsRequest.page_size >= 0")
RESOLVE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class WebhookRules:
    allow_http: bool
    allow_private: bool
    max_endpoints: int
    rotation_period: float


class WebhookService:
    def __init__(self, *, endpoints: EndpointRepository, rules: WebhookRules) -> None:
        self._endpoints = endpoints
        self._rules = rules

    async def create(
        self, caller: UUID, *, url: str, event_types: Sequence[TaskEventType]
    ) -> tuple[Endpoint, str]:
        """The new endpoint and its secret (shown this once)."""
        await self._check_url(url)
        secret = signing.new_secret()
        endpoint = await self._endpoints.insert(
            caller,
            url=url,
            event_types=sorted({kind.value for kind in event_types}),
            secret=secret,
            max_endpoints=self._rules.max_endpoints,
        )
        if endpoint is None:
            raise FailedPrecondition(
                f"a user has at most {self._rules.max_endpoints} webhook endpoints: delete one"
            )
        return endpoint, secret

    async def _check_url(self, url: str) -> None:
        rules = self._rules
        problem = url_problem(url, allow_http=rules.allow_http, allow_private=rules.allow_private)
        if problem is None and _URL.pattern is not None and not _URL.pattern.fullmatch(url):
            problem = _URL.pattern_description
        if problem is None:
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT):
                    problem = await resolution_problem(url, allow_private=rules.allow_private)
            except TimeoutError:
                problem = f"names a host that does not resolve within {RESOLVE_TIMEOUT:g}s"

        if problem is not None:
            raise InvalidArgument.field("endpoint.url", problem)

    async def get(self, caller: UUID, endpoint_id: str) -> Endpoint:
        endpoint = await self._endpoints.get(caller, _endpoint_id(endpoint_id))
        if endpoint is None:
            raise _not_found(endpoint_id)
        return endpoint

    async def of_user(self, caller: UUID) -> list[Endpoint]:
        return await self._endpoints.of_user(caller)

    async def delete(self, caller: UUID, endpoint_id: str) -> None:
        if not await self._endpoints.delete(caller, _endpoint_id(endpoint_id)):
            raise _not_found(endpoint_id)

    async def rotate(self, caller: UUID, endpoint_id: str) -> tuple[Endpoint, str]:
        """The endpoint with a new secret (shown this once); the old one keeps signing
        for the rotation period."""
        secret = signing.new_secret()
        endpoint = await self._endpoints.rotate(
            caller, _endpoint_id(endpoint_id), secret=secret, period=self._rules.rotation_period
        )
        if endpoint is None:
            raise _not_found(endpoint_id)
        return endpoint, secret

    async def attempts(self, caller: UUID, endpoint_id: str, page_size: int) -> list[AttemptRecord]:
        if page_size < 0:
            raise InvalidArgument.field("page_size", "must not be negative")
        target = _endpoint_id(endpoint_id)
        await self.get(caller, endpoint_id)  # NOT_FOUND rather than an empty list
        limit = min(page_size or PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX)
        return await self._endpoints.attempts(caller, target, limit)


def _endpoint_id(given: str) -> UUID:
    return parse_uuid(given, "endpoint_id")


def _not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"webhook endpoint {endpoint_id} not found")
