"""The API table of the design, checked against the compiled descriptors."""

from __future__ import annotations

import pytest
from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor

from taskgate.v1 import session_service_pb2, task_service_pb2, user_service_pb2

FILES = {
    "UserService": user_service_pb2,
    "SessionService": session_service_pb2,
    "TaskService": task_service_pb2,
}

API = [
    ("UserService", "CreateUser", "post", "/v1/users", "*"),
    ("UserService", "GetUser", "get", "/v1/users/{user_id}", ""),
    ("UserService", "DeleteUser", "delete", "/v1/users/{user_id}", ""),
    ("SessionService", "CreateSession", "post", "/v1/sessions", "*"),
    ("SessionService", "GetSession", "get", "/v1/sessions/{session_id}", ""),
    ("SessionService", "DeleteSession", "delete", "/v1/sessions/{session_id}", ""),
    ("TaskService", "ListFilters", "get", "/v1/filters", ""),
    ("TaskService", "CreateTask", "post", "/v1/tasks", "*"),
    ("TaskService", "GetTask", "get", "/v1/tasks/{task_id}", ""),
    ("TaskService", "GetTaskResult", "get", "/v1/tasks/{task_id}/result", ""),
    ("TaskService", "ListTasks", "get", "/v1/tasks", ""),
    ("TaskService", "CancelTask", "post", "/v1/tasks/{task_id}:cancel", "*"),
    ("TaskService", "WatchTask", "get", "/v1/tasks/{task_id}:watch", ""),
    ("TaskService", "ListTaskEvents", "get", "/v1/taskEvents", ""),
    ("TaskService", "WatchTaskEvents", "get", "/v1/taskEvents:watch", ""),
]


def method(service: str, name: str) -> descriptor.MethodDescriptor:
    found: descriptor.MethodDescriptor = (
        FILES[service].DESCRIPTOR.services_by_name[service].methods_by_name[name]
    )
    return found


@pytest.mark.parametrize(("service", "name", "verb", "path", "body"), API)
def test_every_rpc_has_its_http_binding(
    service: str, name: str, verb: str, path: str, body: str
) -> None:
    rule = method(service, name).GetOptions().Extensions[annotations_pb2.http]
    assert getattr(rule, verb) == path
    assert rule.body == body


def test_every_service_has_exactly_the_rpcs_of_the_table() -> None:
    for service, module in FILES.items():
        names = set(module.DESCRIPTOR.services_by_name[service].methods_by_name)
        assert names == {n for s, n, *_ in API if s == service}


def test_cancel_is_also_delete_and_watch_streams() -> None:
    cancel = method("TaskService", "CancelTask").GetOptions().Extensions[annotations_pb2.http]
    assert [b.delete for b in cancel.additional_bindings] == ["/v1/tasks/{task_id}"]
    watch = method("TaskService", "WatchTask")
    assert watch.server_streaming
    assert not watch.client_streaming
    assert method("TaskService", "GetTaskResult").output_type.full_name == "google.api.HttpBody"


def test_enums_start_unspecified_and_passwords_are_input_only() -> None:
    assert task_service_pb2.TaskStatus.Name(0) == "TASK_STATUS_UNSPECIFIED"  # type: ignore[arg-type]
    assert task_service_pb2.ImageFormat.Name(0) == "IMAGE_FORMAT_UNSPECIFIED"  # type: ignore[arg-type]
    password = user_service_pb2.CreateUserRequest.DESCRIPTOR.fields_by_name["password"]
    behaviors = password.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    assert field_behavior_pb2.INPUT_ONLY in behaviors
    assert field_behavior_pb2.REQUIRED in behaviors


def test_filter_oneof_names_the_design_filters() -> None:
    oneof = task_service_pb2.Filter.DESCRIPTOR.oneofs_by_name["filter"]
    assert {f.name for f in oneof.fields} == {
        "grayscale",
        "blur",
        "sharpen",
        "resize",
        "rotate",
        "flip",
        "crop",
        "brightness",
        "contrast",
        "invert",
        "edge_detect",
        "thumbnail",
    }
