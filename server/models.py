"""The domain's records: plain frozen dataclasses, free of grpc and psycopg."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    username: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Credentials:
    """What login needs of a user: never leaves the services."""

    id: UUID
    password_hash: str


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: UUID
    created_at: datetime
    expires_at: datetime
