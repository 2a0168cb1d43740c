"""Registering, reading and deleting users."""

from __future__ import annotations

from uuid import UUID

from server.errors import AlreadyExists, NotFound
from server.models import User
from server.passwords import PasswordHasher
from server.services import rules
from server.services.limits import ClientLimits
from server.services.user_cache import UserCache
from server.storage.errors import UniqueViolation
from server.storage.postgres.users import UserRepository
from server.storage.redis.sessions import SessionRepository


class UserService:
    def __init__(
        self,
        *,
        users: UserRepository,
        sessions: SessionRepository,
        hasher: PasswordHasher,
        cache: UserCache,
        client_limits: ClientLimits,
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._hasher = hasher
        self._cache = cache
        self._client_limits = client_limits

    async def register(self, username: str, password: str) -> User:
        rules.check_credentials(username, password)
        self._hasher.check_room(key=username)
        async with self._client_limits.attempt("register") as attempt:
            password_hash = await self._hasher.hash(
                password, key=username, on_start=attempt.hash_started
            )
            attempt.hash_ended()
            try:
                return await self._users.insert(username, password_hash)
            except UniqueViolation as exc:
                if exc.constraint == "users_username_key":
                    raise AlreadyExists(f"the username {username!r} is taken") from None
                raise

    async def get(self, caller: UUID, user_id: str) -> User:
        target = self._own_id(caller, user_id)
        user = self._cache.get(target)
        if user is None:
            user = await self._users.get(target)
            if user is None:
                raise NotFound(f"user {user_id!r} not found")
            self._cache.put(user)
        return user

    async def delete(self, caller: UUID, user_id: str) -> None:
        target = self._own_id(caller, user_id)
        self._cache.evict(target)
        await self._sessions.delete_all(target)
        if not await self._users.delete(target):
            raise NotFound(f"user {user_id!r} not found")
        # A login that raced the delete may have opened a session in between.
        await self._sessions.delete_all(target)

    @staticmethod
    def _own_id(caller: UUID, user_id: str) -> UUID:
        """The caller's own id; anyone else's is NOT_FOUND, as if it did not exist."""
        target = rules.parse_user_id(user_id, caller)
        if target != caller:
            raise NotFound(f"user {user_id!r} not found")
        return target
