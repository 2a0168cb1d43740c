"""Device tokens in Redis: which user each one proves an earlier login of."""

from __future__ import annotations

from uuid import UUID

from server.storage.redis.client import RedisRepository


class DeviceTokenRepository(RedisRepository):
    async def owner(self, token: str) -> UUID | None:
        """The user ``token`` was issued to, or None when it is unknown or expired."""
        async with self._call("device_token_get"):
            user_id = await self._redis.get(self._keys.device_token(token))
        return None if user_id is None else UUID(str(user_id))

    async def save(self, token: str, user_id: UUID, ttl: float, *, replacing: str = "") -> None:
        """Issues ``token`` to the user for ``ttl`` seconds, revoking ``replacing`` if given."""
        # Not a transaction: the two keys may live on different cluster slots.
        call = self._call("device_token_set")
        async with call, self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._keys.device_token(token), str(user_id), px=max(1, int(ttl * 1000)))
            if replacing:
                pipe.delete(self._keys.device_token(replacing))
            await pipe.execute()

    async def revoke(self, token: str) -> None:
        async with self._call("device_token_delete"):
            await self._redis.delete(self._keys.device_token(token))
