"""Users in Postgres."""

from __future__ import annotations

from uuid import UUID

from server.models import Credentials, User
from server.storage.postgres.database import Database


class UserRepository:
    def __init__(self, *, database: Database) -> None:
        self._db = database

    async def insert(self, username: str, password_hash: str) -> User:
        """Raises UniqueViolation("users_username_key") when the name is taken."""
        user = await self._db.fetch_one(
            "insert_user", {"username": username, "password_hash": password_hash}, User
        )
        assert user is not None  # INSERT ... RETURNING returns the row
        return user

    async def get(self, user_id: UUID) -> User | None:
        return await self._db.fetch_one("get_user", {"id": user_id}, User)

    async def get_credentials(self, username: str) -> Credentials | None:
        return await self._db.fetch_one("get_credentials", {"username": username}, Credentials)

    async def delete(self, user_id: UUID) -> bool:
        return await self._db.execute("delete_user", {"id": user_id}) > 0
