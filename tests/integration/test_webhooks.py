"""Webhooks end to end on real components: the server with its processor and
dispatcher, Postgres, and a real aiohttp receiver. Every delivery is verified
with ``standardwebhooks``, the reference implementation."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from standardwebhooks.webhooks import Webhook

from server.config import Settings
from taskgate.v1 import task_service_pb2 as task_pb
from taskgate.v1 import webhook_service_pb2 as pb
from taskgate.v1 import webhook_service_pb2_grpc as pb_grpc
from tests.support.clients import Client, Tasks, field_violations, grayscale, task_user
from tests.support.images import image_bytes
from tests.support.polling import eventually
from tests.support.receiver import Received, dispatching, receiving
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(60)


class Hooks:
    def __init__(self, client: Client, tasks: Tasks) -> None:
        self.stub = pb_grpc.WebhookServiceStub(client.channel)
        self.metadata = tasks.metadata

    async def create(self, url: str, *types: int) -> pb.CreateWebhookEndpointResponse:
        endpoint = pb.WebhookEndpoint(url=url, event_types=types)  # type: ignore[arg-type]
        return await self.stub.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(endpoint=endpoint), metadata=self.metadata
        )

    async def get(self, endpoint_id: str) -> pb.WebhookEndpoint:
        response = await self.stub.GetWebhookEndpoint(
            pb.GetWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=self.metadata
        )
        return response.endpoint

    async def attempts(self, endpoint_id: str) -> list[pb.WebhookAttempt]:
        response = await self.stub.ListWebhookAttempts(
            pb.ListWebhookAttemptsRequest(endpoint_id=endpoint_id), metadata=self.metadata
        )
        return list(response.attempts)


def verified(request: Received, secret: str) -> dict[str, object]:
    """The payload, after the reference implementation checked its signature."""
    payload: dict[str, object] = Webhook(secret).verify(request.body, request.headers)
    return payload


def types_of(requests: list[Received]) -> list[str]:
    return [r.json["type"] for r in requests]


async def test_events_are_delivered_signed_in_order_and_listed(settings: Settings) -> None:
    async with receiving() as receiver, serving(settings) as (_, client):
        tasks = await task_user(client)
        hooks = Hooks(client, tasks)
        created = await hooks.create(receiver.url + "/all")
        assert created.secret.startswith("whsec_")
        only_ends = await hooks.create(receiver.url + "/ends", task_pb.TASK_EVENT_TYPE_COMPLETED)
        task = await tasks.create(image_bytes(16, 16), [grayscale()])
        await receiver.wait_for(
            lambda r: len(r.accepted("/all")) == 3 and len(r.accepted("/ends")) == 1
        )

        everything = receiver.accepted("/all")
        assert types_of(everything) == ["task.created", "task.started", "task.completed"]
        for request in everything:
            payload = verified(request, created.secret)
            data = payload["data"]
            assert isinstance(data, dict)
            assert data["taskId"] == task.task_id
            assert request.headers["webhook-id"] == f"evt_{data['eventId']}"
        assert everything[-1].json["data"]["task"]["status"] == "TASK_STATUS_COMPLETED"
        (ending,) = receiver.accepted("/ends")
        verified(ending, only_ends.secret)
        with pytest.raises(Exception, match="signature"):
            verified(ending, created.secret)  # another endpoint's key

        async def all_listed() -> bool:
            return len(await hooks.attempts(created.endpoint.endpoint_id)) == 3

        await eventually(all_listed)
        listed = await hooks.attempts(created.endpoint.endpoint_id)
        assert {(a.http_status, a.error, a.attempt) for a in listed} == {(200, "", 1)}
        assert all(a.latency.ToNanoseconds() > 0 for a in listed)


async def test_a_rotated_secret_signs_with_both_keys(settings: Settings) -> None:
    async with (
        receiving() as receiver,
        serving(settings, embedded_processor=False) as (_, client),
        dispatching(settings),
    ):
        tasks = await task_user(client)
        hooks = Hooks(client, tasks)
        created = await hooks.create(receiver.url)
        rotated = await hooks.stub.RotateWebhookEndpointSecret(
            pb.RotateWebhookEndpointSecretRequest(endpoint_id=created.endpoint.endpoint_id),
            metadata=hooks.metadata,
        )
        assert rotated.secret != created.secret
        assert rotated.endpoint.HasField("previous_secret_expire_time")
        await tasks.create(image_bytes(8, 8), [grayscale()])
        await receiver.wait_for(lambda r: len(r.accepted()) == 1)
        (request,) = receiver.accepted()
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        verified(request, rotated.secret)
        verified(request, created.secret)


async def test_failures_retry_with_the_same_webhook_id_and_show_in_the_attempts(
    settings: Settings,
) -> None:
    answers = iter([500, 503, 200])
    async with (
        receiving(lambda _: next(answers, 200)) as receiver,
        serving(settings, embedded_processor=False) as (_, client),
        dispatching(settings),
    ):
        tasks = await task_user(client)
        hooks = Hooks(client, tasks)
        created = await hooks.create(receiver.url)
        await tasks.create(image_bytes(8, 8), [grayscale()])
        await receiver.wait_for(lambda r: len(r.accepted()) == 1)
        assert [r.status for r in receiver.requests] == [500, 503, 200]
        assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
        for request in receiver.requests:
            verified(request, created.secret)

        async def three_listed() -> bool:
            return len(await hooks.attempts(created.endpoint.endpoint_id)) == 3

        await eventually(three_listed)
        listed = await hooks.attempts(created.endpoint.endpoint_id)
        assert [(a.attempt, a.http_status, a.error) for a in listed] == [
            (3, 200, ""),
            (2, 503, "answered HTTP 503"),
            (1, 500, "answered HTTP 500"),
        ]
        assert (await hooks.get(created.endpoint.endpoint_id)).HasField(
            "failing_since_time"
        ) is False


async def test_410_gone_disables_the_endpoint_at_once(settings: Settings) -> None:
    async with (
        receiving(lambda _: 410) as receiver,
        serving(settings, embedded_processor=False) as (_, client),
        dispatching(settings),
    ):
        tasks = await task_user(client)
        hooks = Hooks(client, tasks)
        created = await hooks.create(receiver.url)
        await tasks.create(image_bytes(8, 8), [grayscale()])
        endpoint_id = created.endpoint.endpoint_id

        async def disabled() -> bool:
            state = (await hooks.get(endpoint_id)).state
            return bool(state == pb.WEBHOOK_ENDPOINT_STATE_DISABLED)

        await eventually(disabled)
        endpoint = await hooks.get(endpoint_id)
        assert endpoint.disabled_reason == "the endpoint answered 410 Gone"
        await tasks.create(image_bytes(8, 8), [grayscale()])
        assert len(receiver.requests) == 1  # nothing more is sent to it


async def test_an_endpoint_failing_for_long_is_disabled_with_the_reason(
    settings: Settings,
) -> None:
    async with (
        receiving(lambda _: 500) as receiver,
        serving(settings, embedded_processor=False) as (_, client),
        dispatching(settings, webhook_disable_after=0.5),
    ):
        tasks = await task_user(client)
        hooks = Hooks(client, tasks)
        created = await hooks.create(receiver.url)
        await tasks.create(image_bytes(8, 8), [grayscale()])

        async def disabled() -> bool:
            endpoint = await hooks.get(created.endpoint.endpoint_id)
            return bool(endpoint.state == pb.WEBHOOK_ENDPOINT_STATE_DISABLED)

        await eventually(disabled)
        endpoint = await hooks.get(created.endpoint.endpoint_id)
        assert endpoint.disabled_reason.startswith("every delivery failed since ")
        assert endpoint.disabled_reason.endswith("the last error: answered HTTP 500")
        assert len(receiver.requests) >= 2


async def test_a_hanging_receiver_never_delays_the_others(settings: Settings) -> None:
    async with (
        receiving() as receiver,
        serving(settings, embedded_processor=False) as (_, client),
        dispatching(settings),
    ):
        tasks = await task_user(client)
        hooks = Hooks(client, tasks)
        await hooks.create(receiver.url + "/hang")
        await hooks.create(receiver.url + "/fast")
        for _ in range(20):
            await tasks.create(image_bytes(8, 8), [grayscale()])
        # The hanging endpoint holds its few slots until its timeout (2 s); the
        # fast one gets all twenty well within it.
        await receiver.wait_for(lambda r: len(r.accepted("/fast")) == 20, within=1.5)


@pytest.mark.parametrize(
    ("url", "changes", "problem"),
    [
        ("ftp://example.com/hook", {}, "must be an http or https URL"),
        ("http://example.com/hook", {"webhook_allow_http": False}, "must be an https URL"),
        ("https://user:secret@example.com/", {}, "must not carry a user or password"),
        ("https://example.com/#frag", {}, "must not have a fragment"),
        ("https://" + "a" * 2050 + ".com", {}, "must be at most 2048 characters"),
        ("https://127.0.0.1/hook", {"webhook_allow_private": False}, "loopback, private"),
        ("https://169.254.169.254/latest", {"webhook_allow_private": False}, "link-local"),
        ("https://[::1]:8443/", {"webhook_allow_private": False}, "loopback"),
        ("https://localhost/hook", {"webhook_allow_private": False}, "loopback, private"),
        ("", {}, "must be an http or https URL"),
    ],
)
async def test_a_bad_url_is_invalid_argument_on_the_url_field(
    settings: Settings, url: str, changes: dict[str, bool], problem: str
) -> None:
    async with serving(settings.model_copy(update=changes), embedded_processor=False) as (
        _,
        client,
    ):
        hooks = Hooks(client, await task_user(client))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await hooks.create(url)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert problem in field_violations(error.value)["endpoint.url"]


async def test_endpoints_are_the_callers_own(settings: Settings) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        alice, bob = Hooks(client, await task_user(client)), Hooks(client, await task_user(client))
        created = await alice.create("https://example.com/hook", task_pb.TASK_EVENT_TYPE_FAILED)
        assert list(created.endpoint.event_types) == [task_pb.TASK_EVENT_TYPE_FAILED]
        endpoint_id = created.endpoint.endpoint_id
        for call in (
            bob.get(endpoint_id),
            bob.attempts(endpoint_id),
            bob.stub.DeleteWebhookEndpoint(
                pb.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=bob.metadata
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await alice.stub.ListWebhookEndpoints(
            pb.ListWebhookEndpointsRequest(), metadata=alice.metadata
        )
        assert [e.endpoint_id for e in listed.endpoints] == [endpoint_id]
        assert "secret" not in str(listed)
        await alice.stub.DeleteWebhookEndpoint(
            pb.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=alice.metadata
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await alice.get(endpoint_id)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_each_delivery_is_one_post_per_event_and_endpoint(settings: Settings) -> None:
    async with receiving() as receiver, serving(settings) as (_, client):
        tasks = await task_user(client)
        hooks = Hooks(client, tasks)
        await hooks.create(receiver.url)
        for _ in range(5):
            await tasks.create(image_bytes(8, 8), [grayscale()])
        await receiver.wait_for(lambda r: len(r.accepted()) == 15)
    ids = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert set(ids.values()) == {1}


async def test_a_user_has_at_most_the_configured_number_of_endpoints(settings: Settings) -> None:
    async with serving(settings, embedded_processor=False, webhook_max_endpoints=2) as (_, client):
        hooks = Hooks(client, await task_user(client))
        first = await hooks.create("https://example.com/1")
        await hooks.create("https://example.com/2")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await hooks.create("https://example.com/3")
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "at most 2 webhook endpoints" in (error.value.details() or "")
        await hooks.stub.DeleteWebhookEndpoint(
            pb.DeleteWebhookEndpointRequest(endpoint_id=first.endpoint.endpoint_id),
            metadata=hooks.metadata,
        )
        await hooks.create("https://example.com/3")  # room again
