"""CreateTask's per-user limit of pending tasks and its priority, GetTask's
queue position, over gRPC against a real server (no processor: tasks stay
PENDING)."""

from __future__ import annotations

import grpc
import pytest

from server.config import Settings
from tests.support.clients import (
    field_violations,
    grayscale,
    quota_violations,
    retry_delay,
    task_user,
)
from tests.support.images import image_bytes
from tests.support.metrics import value
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(60)


async def test_the_pending_limit_refuses_past_it_with_the_quota_and_when_to_retry(
    settings: Settings,
) -> None:
    async with serving(settings, embedded_processor=False, user_max_pending=2) as (app, client):
        tasks, other = await task_user(client), await task_user(client)
        image = image_bytes(8, 8)
        first = await tasks.create(image, [grayscale()], idempotency_key="first")
        await tasks.create(image, [grayscale()])  # at the edge: accepted
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tasks.create(image, [grayscale()])
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 tasks waiting" in (refused.value.details() or "")
        (subject, description) = next(iter(quota_violations(refused.value).items()))
        assert subject.startswith("user:")
        assert "at most 2 pending tasks" in description
        assert retry_delay(refused.value) > 0
        assert value(app.registry, "task_limit_refusals_total", limit="max_pending") == 1
        # A retried submission is not a new task: it still gets its task.
        again = await tasks.create(image, [grayscale()], idempotency_key="first")
        assert again.task_id == first.task_id
        await other.create(image, [grayscale()])  # the limit is per user
        await tasks.cancel(first.task_id)
        await tasks.create(image, [grayscale()])  # room again


@pytest.mark.parametrize(
    ("priority", "accepted"), [(-10, True), (10, True), (-11, False), (11, False)]
)
async def test_priority_at_its_edges_and_past_them(
    settings: Settings, priority: int, accepted: bool
) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        tasks = await task_user(client)
        if accepted:
            task = await tasks.create(image_bytes(8, 8), [grayscale()], priority=priority)
            assert task.priority == priority
            return
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tasks.create(image_bytes(8, 8), [grayscale()], priority=priority)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "from -10 to 10" in field_violations(refused.value)["priority"]


async def test_get_task_shows_a_pending_tasks_position(settings: Settings) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        mine, theirs = await task_user(client), await task_user(client)
        image = image_bytes(8, 8)
        first = await mine.create(image, [grayscale()])
        later = await mine.create(image, [grayscale()])
        urgent = await mine.create(image, [grayscale()], priority=3)
        await theirs.create(image, [grayscale()])
        positions = [(await mine.get(t.task_id)).queue_position for t in (urgent, first, later)]
        # Mine by priority, then age; the other user's one task takes one turn
        # before my second (or first: their tie-break by user id decides).
        assert positions in ([0, 2, 3], [1, 2, 3])
        cancelled = await mine.cancel(later.task_id)
        assert not cancelled.HasField("queue_position")
        assert not (await mine.get(later.task_id)).HasField("queue_position")
        created = await mine.create(image, [grayscale()])
        assert not created.HasField("queue_position")  # only GetTask computes it
