"""The input rules of users and sessions, each failure a field violation.

The rules themselves (required, lengths, patterns, UUIDs) are declared on the
request fields in the protos and read from there (:mod:`server.request_rules`),
the same declarations the gateway's OpenAPI document states; the limits are
module constants so that the tests can probe each edge.
"""

from __future__ import annotations

import re
from uuid import UUID

from server.errors import FieldViolation, InvalidArgument
from server.request_rules import FieldRule, declared, expect_declared, field_rule
from taskgate.v1 import session_service_pb2, task_service_pb2, user_service_pb2

USERNAME = field_rule(user_service_pb2.CreateUserRequest, "username")
PASSWORD = field_rule(user_service_pb2.CreateUserRequest, "password")
LOGIN_USERNAME = field_rule(session_service_pb2.CreateSessionRequest, "username")
LOGIN_PASSWORD = field_rule(session_service_pb2.CreateSessionRequest, "password")
SESSION_ID = field_rule(session_service_pb2.GetSessionRequest, "session_id")
DEVICE_TOKEN = field_rule(session_service_pb2.CreateSessionRequest, "device_token")
USER_ID = field_rule(user_service_pb2.GetUserRequest, "user_id")
TASK_ID = field_rule(task_service_pb2.GetTaskRequest, "task_id")
USERNAME_MIN = declared(USERNAME.min_len, "username's min_len")
USERNAME_MAX = declared(USERNAME.max_len, "username's max_len")
PASSWORD_MIN = declared(PASSWORD.min_len, "password's min_len")
PASSWORD_MAX = declared(PASSWORD.max_len, "password's max_len")
SESSION_ID_LENGTH = 43  # secrets.token_urlsafe(32): 256 bits, base64url without padding
SELF = "me"
# What the code below relies on, checked against the declarations at import.
expect_declared(
    SESSION_ID.min_len == SESSION_ID.max_len == SESSION_ID_LENGTH, "session_id's length"
)
expect_declared(USER_ID.aliases == (SELF,), "user_id's alias 'me'")
expect_declared(USER_ID.uuid and TASK_ID.uuid, "user_id and task_id as UUIDs")

# 8-4-4-4-12 hex digits and nothing else: Python's UUID() also takes "urn:uuid:",
# braces and hyphens anywhere, so the shape is checked first.
CANONICAL_UUID = "^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"
_CANONICAL_UUID = re.compile(CANONICAL_UUID)


def _length(rule: FieldRule) -> str:
    low, high = rule.min_len, rule.max_len
    if low is not None and high is not None:
        return f"must be {low}-{high} characters long"
    if high is not None:
        return f"must be at most {high} characters"
    return f"must be at least {low} characters"


def string_violations(value: str, rule: FieldRule, field: str) -> list[FieldViolation]:
    """The violation of a string field's declared rules (the first one), if any."""
    if not value:
        return [FieldViolation(field, "is required")] if rule.required else []
    too_short = rule.min_len is not None and len(value) < rule.min_len
    if too_short or (rule.max_len is not None and len(value) > rule.max_len):
        return [FieldViolation(field, _length(rule))]
    if rule.pattern is not None and rule.pattern.fullmatch(value) is None:
        return [FieldViolation(field, rule.pattern_description)]
    return []


def username_violations(
    username: str, field: str = "username", rule: FieldRule = USERNAME
) -> list[FieldViolation]:
    return string_violations(username, rule, field)


def password_violations(
    password: str, field: str = "password", rule: FieldRule = PASSWORD
) -> list[FieldViolation]:
    return string_violations(password, rule, field)


def check_credentials(username: str, password: str, *, login: bool = False) -> None:
    """A registration's (or with ``login``, a login's) username and password."""
    if login:
        violations = username_violations(username, rule=LOGIN_USERNAME)
        violations += password_violations(password, rule=LOGIN_PASSWORD)
    else:
        violations = username_violations(username) + password_violations(password)
    if violations:
        raise InvalidArgument(violations)


def parse_user_id(value: str, caller: UUID, field: str = "user_id") -> UUID:
    """A user id or ``me``, as a UUID."""
    if value == SELF:
        return caller
    return parse_uuid(value, field)


def parse_uuid(value: str, field: str) -> UUID:
    if not value:
        raise InvalidArgument.field(field, "is required")
    if _CANONICAL_UUID.fullmatch(value) is None:
        raise InvalidArgument.field(
            field, "must be a UUID in canonical form (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        )
    return UUID(value)


def check_session_id(value: str, field: str = "session_id") -> None:
    if not value:
        raise InvalidArgument.field(field, "is required")
    if not looks_like_session_id(value):
        raise InvalidArgument.field(field, "is not a session id")


def check_device_token(value: str, field: str = "device_token") -> None:
    """Optional; when given it must have the shape of the tokens the server issues."""
    violations = string_violations(value, DEVICE_TOKEN, field)
    if violations:
        raise InvalidArgument(violations)


def looks_like_session_id(value: str) -> bool:
    return not string_violations(value, SESSION_ID, "session_id")
