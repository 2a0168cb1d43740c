"""Users in Postgres."""

from __future__ import annotations

from uuid import UUID

from server.models import Credentials, User
from server.storage.postgres.database import Database
from server.storage.postgres.replicas import ReadRouter


class UserRepository:
    """Writes and the login's reads on the primary; the API's reads through ``reads``."""

    def __init__(self, *, database: Database, reads: ReadRouter | None = None) -> None:
        self._db = database
        self._reads = reads or ReadRouter(primary=database)

    async def insert(self, username: str, password_hash: str) -> User:
        """Raises UniqueViolation("users_username_key") when the name is taken."""
        user = await self._db.fetch_one(
            "insert_user", {"username": username, "password_hash": password_hash}, User
        )
        assert user is not None  # INSERT ... RETURNING returns the row
        await self._reads.wrote(user.id)
        return user

    async def get(self, user_id: UUID, *, latest: bool = False) -> User | None:
        """The user, as the user sees it; ``latest``: as the primary has it now."""
        return await self._reads.fetch_one(
            user_id, "get_user", {"id": user_id}, User, latest=latest
        )

    async def get_credentials(self, username: str) -> Credentials | None:
        return await self._db.fetch_one("get_credentials", {"username": username}, Credentials)

    async def delete(self, user_id: UUID) -> bool:
        deleted = await self._db.execute("delete_user", {"id": user_id}) > 0
        if deleted:
            await self._reads.wrote(user_id)
        return deleted
