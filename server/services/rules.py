"""The input rules of users and sessions, each failure a field violation.

Limits are module constants so that the tests can probe each edge.
"""

from __future__ import annotations

import re
from uuid import UUID

from server.errors import FieldViolation, InvalidArgument

USERNAME_MIN, USERNAME_MAX = 3, 32
PASSWORD_MIN, PASSWORD_MAX = 8, 128
SESSION_ID_LENGTH = 43  # secrets.token_urlsafe(32): 256 bits, base64url without padding
SELF = "me"

_USERNAME = re.compile(r"[a-z][a-z0-9_.\-]*")
_SESSION_ID = re.compile(r"[A-Za-z0-9_\-]+")
# 8-4-4-4-12 hex digits and nothing else: Python's UUID() also takes "urn:uuid:",
# braces and hyphens anywhere, so the shape is checked first.
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def username_violations(username: str, field: str = "username") -> list[FieldViolation]:
    if not username:
        return [FieldViolation(field, "is required")]
    if not USERNAME_MIN <= len(username) <= USERNAME_MAX:
        return [FieldViolation(field, f"must be {USERNAME_MIN}-{USERNAME_MAX} characters long")]
    if _USERNAME.fullmatch(username) is None:
        return [
            FieldViolation(
                field,
                "must start with a lowercase letter and contain only lowercase letters, "
                "digits, '_', '.' and '-'",
            )
        ]
    return []


def password_violations(password: str, field: str = "password") -> list[FieldViolation]:
    if not password:
        return [FieldViolation(field, "is required")]
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return [FieldViolation(field, f"must be {PASSWORD_MIN}-{PASSWORD_MAX} characters long")]
    if not password.isprintable():
        return [FieldViolation(field, "must contain only printable characters")]
    return []


def check_credentials(username: str, password: str) -> None:
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
    if value and not looks_like_session_id(value):
        raise InvalidArgument.field(field, "is not a device token from this server")


def looks_like_session_id(value: str) -> bool:
    return len(value) == SESSION_ID_LENGTH and _SESSION_ID.fullmatch(value) is not None
