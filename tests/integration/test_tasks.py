"""TaskService through a real server: the whole life of a task, and its rules."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest

from server.app import App
from server.config import Settings
from taskgate.v1 import task_service_pb2 as pb
from tests.support.clients import (
    Client,
    Tasks,
    blur,
    field_violations,
    grayscale,
    resize,
    task_user,
)
from tests.support.images import decode, image_bytes
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def tasks(channel: grpc.aio.Channel) -> Tasks:
    return await task_user(Client(channel))


async def test_a_task_runs_to_its_result_and_its_watcher_sees_progress(tasks: Tasks) -> None:
    created = await tasks.create(
        image_bytes(48, 32),
        [grayscale(), resize(24, 12), blur(1)],
        output_format=pb.IMAGE_FORMAT_PNG,
    )
    assert created.status == pb.TASK_STATUS_PENDING
    assert created.input.width == 48
    assert created.input.height == 32
    assert created.input.content_type == "image/png"

    seen = await tasks.watch(created.task_id)

    final = seen[-1]
    assert final.status == pb.TASK_STATUS_COMPLETED
    assert final.progress == 3
    progress = [m.progress for m in seen]
    assert progress == sorted(progress)
    assert {m.status for m in seen} <= {
        pb.TASK_STATUS_PENDING,
        pb.TASK_STATUS_RUNNING,
        pb.TASK_STATUS_COMPLETED,
    }
    content_type, data = await tasks.result(created.task_id)
    assert content_type == "image/png"
    image = decode(data)
    assert (image.size, image.mode) == ((24, 12), "L")

    got = await tasks.get(created.task_id)
    assert got.attempts == 1
    assert got.result.width == 24
    assert got.result.height == 12
    assert got.result.size_bytes == len(data)
    assert got.HasField("start_time")
    assert got.HasField("end_time")
    assert got.duration.ToTimedelta().total_seconds() > 0
    assert len(got.filters) == 3
    assert got.filters[1].resize.width == 24


@pytest.mark.parametrize(
    ("output_format", "content_type", "fmt"),
    [
        (pb.IMAGE_FORMAT_JPEG, "image/jpeg", "JPEG"),
        (pb.IMAGE_FORMAT_WEBP, "image/webp", "WEBP"),
        (pb.IMAGE_FORMAT_UNSPECIFIED, "image/png", "PNG"),
    ],
)
async def test_output_formats(
    tasks: Tasks, output_format: int, content_type: str, fmt: str
) -> None:
    created = await tasks.create(
        image_bytes(20, 10, mode="RGBA"), [blur(1)], output_format=output_format
    )
    assert (await tasks.wait_until_ended(created.task_id)).status == pb.TASK_STATUS_COMPLETED
    got_type, data = await tasks.result(created.task_id)
    assert got_type == content_type
    image = decode(data)
    assert image.format == fmt
    assert image.size == (20, 10)


async def test_list_filters_is_public_and_complete(channel: grpc.aio.Channel) -> None:
    response = await Client(channel).tasks.ListFilters(pb.ListFiltersRequest())
    names = [f.name for f in response.filters]
    assert names == [
        "grayscale", "blur", "sharpen", "resize", "rotate", "flip", "crop",
        "brightness", "contrast", "invert", "edge_detect", "thumbnail",
    ]  # fmt: skip
    by_name = {f.name: f for f in response.filters}
    radius = by_name["blur"].parameters[0]
    assert (radius.name, radius.type) == ("radius", "double")
    assert "100" in radius.description
    assert [p.name for p in by_name["crop"].parameters] == ["left", "top", "right", "bottom"]


async def test_the_result_is_a_failed_precondition_until_the_task_completes(
    settings: Settings,
) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        tasks = await task_user(client)
        created = await tasks.create(image_bytes(), [grayscale()])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await tasks.result(created.task_id)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "PENDING" in (caught.value.details() or "")


async def test_cancel_a_pending_task(settings: Settings) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        tasks = await task_user(client)
        created = await tasks.create(image_bytes(), [grayscale()])
        cancelled = await tasks.cancel(created.task_id)
        assert cancelled.status == pb.TASK_STATUS_CANCELLED
        assert cancelled.HasField("end_time")
        assert [m.status for m in await tasks.watch(created.task_id)] == [pb.TASK_STATUS_CANCELLED]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await tasks.cancel(created.task_id)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancel_a_running_task_stops_it_between_two_filters(tasks: Tasks, app: App) -> None:
    # Twenty heavy blurs: long enough to be caught running.
    created = await tasks.create(image_bytes(1200, 1200), [blur(60)] * 20)
    call = tasks.stub.WatchTask(
        pb.WatchTaskRequest(task_id=created.task_id), metadata=tasks.metadata
    )
    async for message in call:
        if message.task.status == pb.TASK_STATUS_RUNNING and message.task.progress >= 1:
            break
    cancelling = await tasks.cancel(created.task_id)
    assert cancelling.status == pb.TASK_STATUS_RUNNING
    assert cancelling.cancel_requested
    final = None
    async for message in call:
        final = message.task
    assert final is not None
    assert final.status == pb.TASK_STATUS_CANCELLED
    assert 1 <= final.progress < 20
    assert "cancelled by its owner" in final.error
    async with await psycopg.AsyncConnection.connect(
        app.settings.database_url.get_secret_value()
    ) as conn:
        cursor = await conn.execute(
            "SELECT outcome FROM task_attempts WHERE task_id = %s", (created.task_id,)
        )
        assert await cursor.fetchall() == [("cancelled",)]


async def test_another_users_task_is_not_found(channel: grpc.aio.Channel) -> None:
    client = Client(channel)
    owner, stranger = await task_user(client), await task_user(client)
    created = await owner.create(image_bytes(), [grayscale()])
    for call in (
        stranger.get(created.task_id),
        stranger.result(created.task_id),
        stranger.cancel(created.task_id),
        stranger.watch(created.task_id),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stranger.list_page()
    assert list(listed.tasks) == []


@pytest.mark.parametrize("task_id", ["", "nope", "urn:uuid:6f1f0e0a-0000-4000-8000-000000000000"])
async def test_a_malformed_task_id_is_invalid(tasks: Tasks, task_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks.get(task_id)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "task_id" in field_violations(caught.value)


async def test_an_unknown_task_is_not_found(tasks: Tasks) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks.get("6f1f0e0a-0000-4000-8000-000000000000")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_task_methods_need_a_session(channel: grpc.aio.Channel) -> None:
    stub = Client(channel).tasks
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateTask(pb.CreateTaskRequest(image=image_bytes(), filters=[grayscale()]))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_idempotent_create_returns_the_same_task(tasks: Tasks) -> None:
    image = image_bytes()
    first = await tasks.create(image, [grayscale()], idempotency_key="order-1")
    again = await tasks.create(image, [grayscale()], idempotency_key="order-1")
    assert again.task_id == first.task_id
    assert again.idempotency_key == "order-1"
    other = await tasks.create(image, [grayscale()], idempotency_key="order-2")
    assert other.task_id != first.task_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks.create(image, [blur(2)], idempotency_key="order-1")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_concurrent_creates_with_one_key_make_one_task(tasks: Tasks) -> None:
    image = image_bytes(64, 64)
    created = await asyncio.gather(
        *(tasks.create(image, [grayscale()], idempotency_key="same") for _ in range(8))
    )
    assert len({task.task_id for task in created}) == 1
    listed = await tasks.list_page()
    assert [t.task_id for t in listed.tasks] == [created[0].task_id]


async def test_the_same_key_of_two_users_makes_two_tasks(channel: grpc.aio.Channel) -> None:
    client = Client(channel)
    a, b = await task_user(client), await task_user(client)
    first = await a.create(image_bytes(), [grayscale()], idempotency_key="k")
    second = await b.create(image_bytes(), [grayscale()], idempotency_key="k")
    assert first.task_id != second.task_id
