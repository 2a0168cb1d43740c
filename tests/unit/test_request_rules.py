"""The request rules are read from the protos' declarations, by the server and by
the OpenAPI document alike."""

from __future__ import annotations

from gateway.app import PRODUCT_SERVICES
from gateway.openapi import method_rules
from server.errors import FieldViolation
from server.interceptors.auth import PUBLIC_METHODS
from server.request_rules import field_rule, public_methods
from server.services import rules
from server.services.rules import string_violations
from taskgate.v1 import task_service_pb2, user_service_pb2


def test_public_methods_are_the_declared_ones() -> None:
    declared = public_methods(PRODUCT_SERVICES)
    assert declared == {
        "/taskgate.v1.UserService/CreateUser",
        "/taskgate.v1.SessionService/CreateSession",
        "/taskgate.v1.TaskService/ListFilters",
    }
    assert declared <= PUBLIC_METHODS
    product = {m for m in PUBLIC_METHODS if m.startswith("/taskgate.")}
    assert product == declared
    for service in PRODUCT_SERVICES:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            assert method_rules(method).public == (path in declared)


def test_the_validation_takes_its_limits_from_the_declarations() -> None:
    username = field_rule(user_service_pb2.CreateUserRequest, "username")
    assert (username.min_len, username.max_len) == (rules.USERNAME_MIN, rules.USERNAME_MAX)
    key = field_rule(task_service_pb2.CreateTaskRequest, "idempotency_key")
    longest = key.max_len or 0
    assert longest == 128
    assert string_violations("k" * longest, key, "k") == []
    assert string_violations("k" * (longest + 1), key, "k") == [
        FieldViolation("k", f"must be at most {longest} characters")
    ]


def test_printable_is_what_the_pattern_says() -> None:
    password = rules.PASSWORD
    ok = ["pässwörd ünïcode", "emoji 🙂 fine", "spaces  are fine"]
    bad = ["tab\there", "admin\u202egnp", "zero\u200bwidth", "line\u2028sep", "nul\x00byte"]
    for value in ok:
        assert rules.password_violations(value) == [], value
    for value in bad:
        (violation,) = rules.password_violations(value)
        assert violation.description == password.pattern_description
