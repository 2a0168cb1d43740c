"""Results larger than a gRPC message: streamed in chunks over gRPC and HTTP; results
over TASKGATE_MAX_RESULT_BYTES: failed at once with the sizes; a result too slow
to store: retried with that reason, never left to its lease."""

from __future__ import annotations

import io
import random

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image
from psycopg.rows import TupleRow

from gateway.app import create_app
from gateway.config import Settings as GatewaySettings
from server.config import Settings
from server.services.tasks import result_chunk_bytes
from taskgate.v1 import task_service_pb2 as pb
from tests.support.clients import resize, task_user
from tests.support.images import decode
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(90)

# Noise does not compress: 160x160 RGB is ~77 KB as PNG, and resized to
# 1000x1000 (still noisy) ~1.9 MB, far more than a server whose images may be
# 100 KB lets any message be (164 KB): its downloads come in chunks that fit.
MAX_IMAGE_BYTES = 100_000
SIDE = 1000


def noise_png(side: int = 160) -> bytes:
    generator = random.Random(7)
    image = Image.frombytes("RGB", (side, side), generator.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def test_a_result_larger_than_any_message_is_streamed_in_chunks(settings: Settings) -> None:
    async with serving(settings, max_image_bytes=MAX_IMAGE_BYTES) as (_, client):
        tasks = await task_user(client)
        image = noise_png()
        assert len(image) < MAX_IMAGE_BYTES
        created = await tasks.create(image, [resize(SIDE, SIDE)])
        ended = await tasks.wait_until_ended(created.task_id)
        assert ended.status == pb.TASK_STATUS_COMPLETED, ended.error
        size = ended.result.size_bytes
        largest_message = MAX_IMAGE_BYTES + 64 * 1024
        assert size > 10 * largest_message

        chunks = await tasks.result_chunks(created.task_id)
        chunk = result_chunk_bytes(largest_message)
        assert chunk < largest_message
        assert [len(c.data) for c in chunks[:-1]] == [chunk] * (len(chunks) - 1)
        assert 0 < len(chunks[-1].data) <= chunk
        assert {c.content_type for c in chunks} == {"image/png"}
        data = b"".join(c.data for c in chunks)
        assert decode(data).size == (SIDE, SIDE)

        # Over HTTP the chunks are one raw body.
        gateway = create_app(GatewaySettings(log_level="warning"), client.channel)
        async with TestClient(TestServer(gateway, host="127.0.0.1")) as http:
            response = await http.get(
                f"/v1/tasks/{created.task_id}/result",
                headers={"Authorization": tasks.metadata[0][1]},
            )
            assert response.status == 200
            assert response.headers["Content-Type"] == "image/png"
            assert await response.read() == data


async def test_a_result_over_the_limit_fails_at_once_with_the_sizes(settings: Settings) -> None:
    async with serving(settings, max_image_bytes=MAX_IMAGE_BYTES, max_result_bytes=500_000) as (
        _,
        client,
    ):
        tasks = await task_user(client)
        created = await tasks.create(noise_png(), [resize(SIDE, SIDE)])
        ended = await tasks.wait_until_ended(created.task_id)
    assert ended.status == pb.TASK_STATUS_FAILED
    assert ended.attempts == 1
    assert "bytes as PNG; the limit is 500000 bytes: choose JPEG or WEBP" in ended.error
    assert "resize or thumbnail" in ended.error


async def test_a_result_too_slow_to_store_is_retried_with_that_reason(
    settings: Settings, db: psycopg.AsyncConnection[TupleRow]
) -> None:
    # The first attempt's result takes Postgres 5 s to store, past the 0.5 s
    # budget (plus the time its bytes are given); the second one goes through.
    await db.execute(
        """CREATE FUNCTION slow_first_result() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF NEW.result_image IS NOT NULL AND NEW.attempts = 1 THEN
               PERFORM pg_sleep(5);
             END IF;
             RETURN NEW;
           END $$"""
    )
    await db.execute(
        "CREATE TRIGGER slow_first_result BEFORE UPDATE ON tasks"
        " FOR EACH ROW EXECUTE FUNCTION slow_first_result()"
    )
    try:
        async with serving(
            settings,
            max_image_bytes=MAX_IMAGE_BYTES,
            db_timeout=0.5,
            task_lease=4.0,
            task_retry_backoff=0.1,
        ) as (_, client):
            tasks = await task_user(client)
            created = await tasks.create(noise_png(), [resize(SIDE, SIDE)])
            ended = await tasks.wait_until_ended(created.task_id)
    finally:
        await db.execute("DROP TRIGGER slow_first_result ON tasks")
        await db.execute("DROP FUNCTION slow_first_result()")
    assert ended.status == pb.TASK_STATUS_COMPLETED
    cursor = await db.execute(
        "SELECT attempt, outcome, error FROM task_attempts WHERE task_id = %s ORDER BY attempt",
        (created.task_id,),
    )
    (first, second) = await cursor.fetchall()
    assert first[:2] == (1, "error")
    assert str(first[2]).startswith(f"storing its {ended.result.size_bytes}-byte result failed")
    assert "did not answer in time" in str(first[2])
    assert second[:2] == (2, "completed")
