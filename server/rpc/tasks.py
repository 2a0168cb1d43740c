"""TaskService over gRPC: proto ↔ model, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.api import httpbody_pb2

from server.context import current_user
from server.errors import InvalidArgument
from server.models import Task
from server.rpc import convert_tasks as convert
from server.services.task_feed import TaskFeed
from server.services.tasks import Submission, TaskService
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[object, object]


class TaskServicer(pb_grpc.TaskServiceServicer):
    def __init__(self, *, tasks: TaskService, feed: TaskFeed) -> None:
        self._tasks = tasks
        self._feed = feed

    def _proto(self, task: Task) -> pb.Task:
        return convert.task_to_proto(task, self._tasks.clock())

    async def ListFilters(
        self, request: pb.ListFiltersRequest, context: Context
    ) -> pb.ListFiltersResponse:
        return pb.ListFiltersResponse(filters=convert.filter_descriptions(self._tasks.filters()))

    async def CreateTask(
        self, request: pb.CreateTaskRequest, context: Context
    ) -> pb.CreateTaskResponse:
        submission = Submission(
            image=request.image,
            filters=[convert.step_from_proto(f) for f in request.filters],
            output_format=convert.output_format_from_proto(request.output_format),
            idempotency_key=request.idempotency_key,
            priority=request.priority,
        )
        task = await self._tasks.create(current_user(), submission)
        return pb.CreateTaskResponse(task=self._proto(task))

    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.GetTaskResponse:
        task = await self._tasks.get(current_user(), request.task_id)
        return pb.GetTaskResponse(task=self._proto(task))

    async def GetTaskResult(
        self, request: pb.GetTaskResultRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        async for chunk in self._tasks.result(current_user(), request.task_id):
            yield httpbody_pb2.HttpBody(content_type=chunk.content_type, data=chunk.data)

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        try:
            status = convert.status_from_proto(request.status)
        except ValueError:
            raise InvalidArgument.field("status", "is not a task status") from None
        page = await self._tasks.list(
            current_user(),
            page_size=request.page_size,
            page_token=request.page_token,
            status=status,
        )
        return pb.ListTasksResponse(
            tasks=[self._proto(task) for task in page.tasks],
            next_page_token=page.next_page_token,
        )

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Context
    ) -> pb.CancelTaskResponse:
        task = await self._tasks.cancel(current_user(), request.task_id)
        return pb.CancelTaskResponse(task=self._proto(task))

    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.WatchTaskResponse]:
        async for task in self._tasks.watch(current_user(), request.task_id):
            yield pb.WatchTaskResponse(task=self._proto(task))

    async def ListTaskEvents(
        self, request: pb.ListTaskEventsRequest, context: Context
    ) -> pb.ListTaskEventsResponse:
        events = await self._feed.list(
            current_user(), after=request.after, page_size=request.page_size
        )
        return pb.ListTaskEventsResponse(events=[convert.event_to_proto(e) for e in events])

    async def WatchTaskEvents(
        self, request: pb.WatchTaskEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchTaskEventsResponse]:
        async for event in self._feed.watch(current_user(), after=request.after):
            yield pb.WatchTaskEventsResponse(event=convert.event_to_proto(event))
