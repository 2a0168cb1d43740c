"""CreateTask validates everything before accepting: each limit at its edge and past it."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import grpc
import pytest
from PIL import Image

from server.config import Settings
from taskgate.v1 import task_service_pb2 as pb
from tests.support.clients import Tasks, blur, field_violations, grayscale, resize, task_user
from tests.support.images import image_bytes
from tests.support.servers import serving

MAX_BYTES = 40_000
MAX_PIXELS = 100 * 100


@pytest.fixture
async def tasks(settings: Settings) -> AsyncIterator[Tasks]:
    async with serving(
        settings, embedded_processor=False, max_image_bytes=MAX_BYTES, max_image_pixels=MAX_PIXELS
    ) as (_, client):
        yield await task_user(client)


async def rejected(
    tasks: Tasks, image: bytes, filters: list[pb.Filter], **kw: object
) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks.create(image, filters, **kw)  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return field_violations(caught.value)


def bmp_of_size(size: int) -> bytes:
    """An uncompressed image of exactly ``size`` bytes (BMP rows: 4-byte aligned)."""
    width = 25  # 75 bytes a row, padded to 76
    header = 54
    height = (size - header) // 76
    data = image_bytes(width, height, fmt="BMP")
    assert len(data) == header + 76 * height
    return data


async def test_pixels_at_the_limit_pass_one_more_row_does_not(tasks: Tasks) -> None:
    await tasks.create(image_bytes(100, 100), [grayscale()])
    violations = await rejected(tasks, image_bytes(100, 101), [grayscale()])
    assert "image" in violations


async def test_bytes_at_the_limit_pass_past_it_do_not(settings: Settings) -> None:
    async with serving(
        settings, embedded_processor=False, max_image_bytes=54 + 76 * 50, max_image_pixels=10**6
    ) as (_, client):
        tasks = await task_user(client)
        await tasks.create(bmp_of_size(54 + 76 * 50), [grayscale()])
        padded = bmp_of_size(54 + 76 * 51)
        assert "image" in await rejected(tasks, padded, [grayscale()])


async def test_a_decompression_bomb_is_refused_from_its_header(tasks: Tasks) -> None:
    bomb = io.BytesIO()
    Image.new("L", (6000, 6000)).save(bomb, format="PNG", optimize=True)
    assert len(bomb.getvalue()) < MAX_BYTES  # small on the wire, 36 megapixels inside
    violations = await rejected(tasks, bomb.getvalue(), [grayscale()])
    assert "pixels" in violations["image"]


@pytest.mark.parametrize(
    "image",
    [b"", b"not an image at all", image_bytes(20, 20)[:20]],
    ids=["empty", "garbage", "header-cut-short"],
)
async def test_not_an_image(tasks: Tasks, image: bytes) -> None:
    assert "image" in await rejected(tasks, image, [grayscale()])


async def test_an_image_cut_short_after_its_header_fails_its_task_without_retry(
    settings: Settings,
) -> None:
    """Only the header is read on the request path; the processor's decode fails the task."""
    async with serving(settings) as (_, client):
        tasks = await task_user(client)
        created = await tasks.create(image_bytes(20, 20)[:60], [grayscale()])
        ended = await tasks.wait_until_ended(created.task_id)
        assert ended.status == pb.TASK_STATUS_FAILED
        assert ended.attempts == 1
        assert "truncated or corrupt" in ended.error


async def test_a_format_that_is_not_allowed(tasks: Tasks) -> None:
    ppm = image_bytes(10, 10, fmt="PPM")
    assert "image" in await rejected(tasks, ppm, [grayscale()])


async def test_filter_count_edges(tasks: Tasks) -> None:
    await tasks.create(image_bytes(10, 10), [grayscale()] * 20)
    assert "filters" in await rejected(tasks, image_bytes(10, 10), [grayscale()] * 21)
    assert "filters" in await rejected(tasks, image_bytes(10, 10), [])


async def test_each_bad_field_has_its_own_violation(tasks: Tasks) -> None:
    filters = [
        grayscale(),
        blur(0),
        pb.Filter(),
        resize(10001, 5),
        pb.Filter(rotate=pb.Filter.Rotate(degrees=361)),
        pb.Filter(flip=pb.Filter.Flip()),
        pb.Filter(brightness=pb.Filter.Brightness(factor=float("nan"))),
        blur(100.5),
    ]
    violations = await rejected(
        tasks, image_bytes(10, 10), filters, output_format=9, idempotency_key="x" * 129
    )
    assert set(violations) == {
        "filters[1].blur.radius",
        "filters[2]",
        "filters[3].resize.width",
        "filters[4].rotate.degrees",
        "filters[5].flip.direction",
        "filters[6].brightness.factor",
        "filters[7].blur.radius",
        "output_format",
        "idempotency_key",
    }


async def test_parameters_at_their_edges_pass(tasks: Tasks) -> None:
    filters = [
        blur(100),
        pb.Filter(rotate=pb.Filter.Rotate(degrees=-360)),
        pb.Filter(brightness=pb.Filter.Brightness(factor=10)),
        pb.Filter(contrast=pb.Filter.Contrast(factor=0)),
        pb.Filter(thumbnail=pb.Filter.Thumbnail(max_side=10000)),
        pb.Filter(crop=pb.Filter.Crop(left=0, top=0, right=10, bottom=10)),
    ]
    await tasks.create(image_bytes(10, 10), filters, idempotency_key="k" * 128)


async def test_no_step_may_produce_more_pixels_than_allowed(tasks: Tasks) -> None:
    await tasks.create(image_bytes(10, 10), [resize(100, 100)])
    violations = await rejected(tasks, image_bytes(10, 10), [grayscale(), resize(100, 101)])
    assert set(violations) == {"filters[1].resize"}
    # An expanding rotate of a 100x100 image needs 142x142.
    rotate = pb.Filter(rotate=pb.Filter.Rotate(degrees=45, expand=True))
    violations = await rejected(tasks, image_bytes(100, 100), [rotate])
    assert set(violations) == {"filters[0].rotate"}
    await tasks.create(image_bytes(100, 100), [pb.Filter(rotate=pb.Filter.Rotate(degrees=45))])


async def test_a_crop_outside_the_image_at_its_step_is_refused_up_front(tasks: Tasks) -> None:
    crop = pb.Filter(crop=pb.Filter.Crop(left=0, top=0, right=30, bottom=10))
    violations = await rejected(tasks, image_bytes(40, 40), [resize(20, 20), crop])
    assert set(violations) == {"filters[1].crop"}
