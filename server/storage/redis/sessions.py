"""Sessions and rate-limit counters in Redis."""

from __future__ import annotations

import functools
from datetime import datetime
from uuid import UUID

from redis.commands.core import AsyncScript

from server.models import Session
from server.storage.redis.client import RedisRepository

REFUND = """
-- One count handed back, never below zero, and never a key the window already expired.
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then redis.call('DECR', KEYS[1]) end
return count
"""


class SessionRepository(RedisRepository):
    @functools.cached_property
    def _refund(self) -> AsyncScript:
        return self._redis.register_script(REFUND)

    async def create(self, session: Session) -> None:
        ttl_ms = max(1, int((session.expires_at - session.created_at).total_seconds() * 1000))
        key = self._keys.session(session.id)
        user_key = self._keys.user_sessions(session.user_id)
        async with self._call("session_create"), self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "user_id": str(session.user_id),
                    "created_at": session.created_at.isoformat(),
                    "expires_at": session.expires_at.isoformat(),
                    "is_active": "1",
                },
            )
            pipe.pexpire(key, ttl_ms)
            pipe.sadd(user_key, session.id)
            # Every session lives as long as the newest: the set outlives them all.
            pipe.pexpire(user_key, ttl_ms)
            await pipe.execute()

    async def get(self, session_id: str) -> Session | None:
        """The session, or None when it is unknown, expired or inactive."""
        async with self._call("session_get"):
            fields = await self._redis.hgetall(self._keys.session(session_id))
        if fields.get("is_active") != "1":
            return None
        return Session(
            id=session_id,
            user_id=UUID(_text(fields["user_id"])),
            created_at=datetime.fromisoformat(_text(fields["created_at"])),
            expires_at=datetime.fromisoformat(_text(fields["expires_at"])),
        )

    async def owner(self, session_id: str) -> UUID | None:
        """The user of a live session, or None: the one lookup of every authenticated call."""
        async with self._call("session_owner"):
            user_id, is_active = await self._redis.hmget(
                self._keys.session(session_id), ["user_id", "is_active"]
            )
        if is_active != "1" or user_id is None:
            return None
        return UUID(_text(user_id))

    async def delete(self, session: Session) -> bool:
        async with self._call("session_delete"), self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._keys.session(session.id))
            pipe.srem(self._keys.user_sessions(session.user_id), session.id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def delete_all(self, user_id: UUID) -> int:
        """Revokes every session of the user; returns how many were still alive."""
        user_key = self._keys.user_sessions(user_id)
        async with self._call("sessions_delete_all"):
            session_ids = await self._redis.smembers(user_key)
            keys = [self._keys.session(_text(sid)) for sid in session_ids]
            # One key per DEL: the keys may live on different cluster slots.
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.delete(key)
                pipe.delete(user_key)
                results = await pipe.execute()
        return sum(results[:-1])

    async def count_login_failure(
        self, username: str, client: str, window: float
    ) -> tuple[int, float]:
        """Counts a wrong password; returns the failures in this window and its seconds left."""
        return await self._hit(self._keys.login_failures(username, client), window)

    async def login_failures(self, username: str, client: str) -> tuple[int, float]:
        """Wrong passwords for ``username`` from ``client`` in this window, and its seconds left."""
        return await self._count(self._keys.login_failures(username, client))

    async def count_client_attempt(
        self, action: str, client: str, window: float
    ) -> tuple[int, float]:
        """Counts one ``action`` (login, register) from a client address."""
        return await self._hit(self._keys.client_attempts(action, client), window)

    async def refund_client_attempt(self, action: str, client: str) -> None:
        """Hands back one counted ``action``: the call failed on the server's side."""
        key = self._keys.client_attempts(action, client)
        async with self._call("counter_refund"):
            await self._refund(keys=[key])

    async def client_attempts(self, action: str, client: str) -> tuple[int, float]:
        """The ``action`` attempts counted for a client address in this window."""
        return await self._count(self._keys.client_attempts(action, client))

    async def _hit(self, key: str, window: float) -> tuple[int, float]:
        async with self._call("counter_hit"), self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, max(1, int(window * 1000)), nx=True)
            pipe.pttl(key)
            count, _, ttl_ms = await pipe.execute()
        return int(count), max(0.0, int(ttl_ms) / 1000)

    async def _count(self, key: str) -> tuple[int, float]:
        async with self._call("counter_read"), self._redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            count, ttl_ms = await pipe.execute()
        return int(count or 0), max(0.0, int(ttl_ms) / 1000)

    async def ping(self) -> None:
        async with self._call("ping"):
            await self._redis.ping()


def _text(value: str | bytes) -> str:
    """The client decodes replies; this only convinces the type checker."""
    return value if isinstance(value, str) else value.decode()
