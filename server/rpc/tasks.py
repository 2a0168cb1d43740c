"""TaskService over gRPC: registered so that clients see it, answering
UNIMPLEMENTED until the tasks work lands (which is the truth)."""

from __future__ import annotations

import grpc
from google.api import httpbody_pb2

from server.errors import Unimplemented
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[object, object]


def _unimplemented(method: str) -> Unimplemented:
    return Unimplemented(f"TaskService.{method} is not implemented yet")


class TaskServicer(pb_grpc.TaskServiceServicer):
    async def ListFilters(
        self, request: pb.ListFiltersRequest, context: Context
    ) -> pb.ListFiltersResponse:
        raise _unimplemented("ListFilters")

    async def CreateTask(
        self, request: pb.CreateTaskRequest, context: Context
    ) -> pb.CreateTaskResponse:
        raise _unimplemented("CreateTask")

    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.GetTaskResponse:
        raise _unimplemented("GetTask")

    async def GetTaskResult(
        self, request: pb.GetTaskResultRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        raise _unimplemented("GetTaskResult")

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        raise _unimplemented("ListTasks")

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Context
    ) -> pb.CancelTaskResponse:
        raise _unimplemented("CancelTask")

    async def WatchTask(  # type: ignore[override]  # a coroutine streams with context.write
        self, request: pb.WatchTaskRequest, context: Context
    ) -> None:
        raise _unimplemented("WatchTask")
