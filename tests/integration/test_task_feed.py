"""The event feed over gRPC: ListTaskEvents pages in order, WatchTaskEvents replays
and then follows, a reconnect with the last id resumes exactly, and a user's ids
increase in commit order."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest
from psycopg.rows import TupleRow

from server.config import Settings
from taskgate.v1 import task_service_pb2 as pb
from tests.support.clients import Tasks, field_violations, grayscale, task_user
from tests.support.images import image_bytes
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(60)
Db = psycopg.AsyncConnection[TupleRow]


async def list_events(tasks: Tasks, after: int = 0, page_size: int = 0) -> list[pb.TaskEvent]:
    response = await tasks.stub.ListTaskEvents(
        pb.ListTaskEventsRequest(after=after, page_size=page_size), metadata=tasks.metadata
    )
    return list(response.events)


async def test_list_pages_through_the_callers_events_in_order(settings: Settings) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        alice, bob = await task_user(client), await task_user(client)
        first = await alice.create(image_bytes(8, 8), [grayscale()])
        await bob.create(image_bytes(8, 8), [grayscale()])
        await alice.cancel(first.task_id)
        second = await alice.create(image_bytes(8, 8), [grayscale()])

        events = await list_events(alice)
        assert [(e.task_id, e.type) for e in events] == [
            (first.task_id, pb.TASK_EVENT_TYPE_CREATED),
            (first.task_id, pb.TASK_EVENT_TYPE_CANCELLED),
            (second.task_id, pb.TASK_EVENT_TYPE_CREATED),
        ]
        ids = [e.event_id for e in events]
        assert ids == sorted(ids)
        assert len(set(ids)) == 3
        assert events[1].task.status == pb.TASK_STATUS_CANCELLED
        assert events[1].task.input.width == 8
        assert len({e.user_id for e in events}) == 1

        page = await list_events(alice, page_size=2)
        rest = await list_events(alice, after=page[-1].event_id, page_size=2)
        assert [e.event_id for e in page + rest] == ids
        assert await list_events(alice, after=ids[-1]) == []
        (bobs,) = await list_events(bob)
        assert bobs.user_id != events[0].user_id


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [({"after": -1}, "after"), ({"page_size": -1}, "page_size")],
)
async def test_a_bad_offset_or_page_size_is_invalid_argument(
    settings: Settings, request_fields: dict[str, int], field: str
) -> None:
    async with serving(settings, embedded_processor=False) as (_, client):
        tasks = await task_user(client)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await tasks.stub.ListTaskEvents(
                pb.ListTaskEventsRequest(**request_fields), metadata=tasks.metadata
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(error.value)


async def next_events(
    call: grpc.aio.UnaryStreamCall[pb.WatchTaskEventsRequest, pb.WatchTaskEventsResponse],
    count: int,
) -> list[pb.TaskEvent]:
    events = []
    async with asyncio.timeout(10):
        for _ in range(count):
            message = await call.read()
            assert isinstance(message, pb.WatchTaskEventsResponse)
            events.append(message.event)
    return events


async def test_watch_replays_then_follows_and_resumes_after_the_last_id(
    settings: Settings,
) -> None:
    async with serving(settings) as (_, client):
        tasks = await task_user(client)
        done = await tasks.create(image_bytes(8, 8), [grayscale()])
        await tasks.wait_until_ended(done.task_id)

        watch = tasks.stub.WatchTaskEvents(pb.WatchTaskEventsRequest(), metadata=tasks.metadata)
        replayed = await next_events(watch, 3)
        assert [e.type for e in replayed] == [
            pb.TASK_EVENT_TYPE_CREATED,
            pb.TASK_EVENT_TYPE_STARTED,
            pb.TASK_EVENT_TYPE_COMPLETED,
        ]
        live = await tasks.create(image_bytes(8, 8), [grayscale()])
        followed = await next_events(watch, 2)
        assert [(e.task_id, e.type) for e in followed] == [
            (live.task_id, pb.TASK_EVENT_TYPE_CREATED),
            (live.task_id, pb.TASK_EVENT_TYPE_STARTED),
        ]
        watch.cancel()

        # Disconnected: the task ends meanwhile; the reconnect resumes after the last id.
        await tasks.wait_until_ended(live.task_id)
        resumed = tasks.stub.WatchTaskEvents(
            pb.WatchTaskEventsRequest(after=followed[-1].event_id), metadata=tasks.metadata
        )
        (ending,) = await next_events(resumed, 1)
        assert (ending.task_id, ending.type) == (live.task_id, pb.TASK_EVENT_TYPE_COMPLETED)
        everything = await list_events(tasks)
        assert [e.event_id for e in replayed + followed + [ending]] == [
            e.event_id for e in everything
        ]
        resumed.cancel()


async def test_an_uncommitted_event_holds_back_its_owners_later_ids_only(
    settings: Settings, db: Db
) -> None:
    """A user's ids are taken in commit order: while one transaction holds an event of
    theirs, another cannot take an id for them, so a reader of their events that saw id
    N never sees a smaller one of theirs appear. Another user's events do not wait."""
    async with serving(settings, embedded_processor=False) as (_, client):
        tasks = await task_user(client)
        created = await tasks.create(image_bytes(8, 8), [grayscale()])
        others = await task_user(client)
        elsewhere = await others.create(image_bytes(8, 8), [grayscale()])
    insert = (
        "INSERT INTO task_events (task_id, user_id, type, payload)"
        " SELECT id, user_id, %s, '{}' FROM tasks WHERE id = %s RETURNING id"
    )
    url = settings.database_url.get_secret_value()
    async with await psycopg.AsyncConnection.connect(url) as holder:
        cursor = await holder.execute(insert, ("task.retried", created.task_id))
        held = await cursor.fetchone()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as other:
            await other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                await other.execute(insert, ("task.cancelled", created.task_id))
            cursor = await other.execute(insert, ("task.cancelled", elsewhere.task_id))
            taken = await cursor.fetchone()
        await holder.rollback()
    assert held is not None
    assert taken is not None
    assert taken[0] > held[0]  # unique and increasing all the same
