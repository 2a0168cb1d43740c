"""ListTasks: newest first, opaque cursors, a status filter, stable pages."""

from __future__ import annotations

import asyncio
import base64

import grpc
import pytest

from server.config import Settings
from taskgate.v1 import task_service_pb2 as pb
from tests.support.clients import Tasks, grayscale, task_user
from tests.support.images import image_bytes
from tests.support.servers import serving


async def pages(tasks: Tasks, page_size: int, status: int = 0) -> list[list[str]]:
    found, token = [], ""
    while True:
        page = await tasks.list_page(page_size=page_size, page_token=token, status=status)
        found.append([t.task_id for t in page.tasks])
        token = page.next_page_token
        if not token:
            return found


@pytest.fixture
async def idle(settings: Settings) -> object:
    """A server without a processor: tasks stay PENDING."""
    async with serving(settings, embedded_processor=False) as (_, client):
        yield client


async def test_pages_are_newest_first_and_stable_under_concurrent_inserts(idle: object) -> None:
    tasks = await task_user(idle)  # type: ignore[arg-type]
    image = image_bytes(8, 8)
    first_batch = [(await tasks.create(image, [grayscale()])).task_id for _ in range(25)]

    first = await tasks.list_page(page_size=10)
    assert [t.task_id for t in first.tasks] == first_batch[::-1][:10]
    # Others insert while the client pages on: neither skips nor repeats.
    await asyncio.gather(*(tasks.create(image, [grayscale()]) for _ in range(7)))
    token, rest = first.next_page_token, list[str]()
    while token:
        page = await tasks.list_page(page_size=10, page_token=token)
        rest.extend(t.task_id for t in page.tasks)
        token = page.next_page_token
    assert [t.task_id for t in first.tasks] + rest == first_batch[::-1]

    everything = await pages(tasks, 100)
    assert len(everything) == 1
    assert len(everything[0]) == 32


async def test_page_size_defaults_and_caps(idle: object) -> None:
    tasks = await task_user(idle)  # type: ignore[arg-type]
    image = image_bytes(8, 8)
    await asyncio.gather(*(tasks.create(image, [grayscale()]) for _ in range(22)))
    assert len((await tasks.list_page()).tasks) == 20
    assert len((await tasks.list_page(page_size=1000)).tasks) == 22
    assert len((await tasks.list_page(page_size=1)).tasks) == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks.list_page(page_size=-1)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_status_filter(idle: object) -> None:
    tasks = await task_user(idle)  # type: ignore[arg-type]
    ids = [(await tasks.create(image_bytes(8, 8), [grayscale()])).task_id for _ in range(3)]
    await tasks.cancel(ids[1])
    cancelled = await tasks.list_page(status=pb.TASK_STATUS_CANCELLED)
    assert [t.task_id for t in cancelled.tasks] == [ids[1]]
    pending = await pages(tasks, 1, status=pb.TASK_STATUS_PENDING)
    assert pending == [[ids[2]], [ids[0]]]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks.list_page(status=42)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_forged_or_foreign_page_token_is_invalid(idle: object) -> None:
    tasks = await task_user(idle)  # type: ignore[arg-type]
    for _ in range(3):
        await tasks.create(image_bytes(8, 8), [grayscale()])
    token = (await tasks.list_page(page_size=1)).next_page_token
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[5] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for bad in ("garbage", "", tampered, token[:-2], token + "AA"):
        if not bad:
            continue
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await tasks.list_page(page_size=1, page_token=bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    # A token is bound to the filter it was made for.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks.list_page(page_size=1, page_token=token, status=pb.TASK_STATUS_PENDING)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
