"""Each user's WAL position in Redis: how far a replica must have replayed
before it may answer that user's reads (read-your-writes, monotonic reads).

The position only moves forward (a Lua script keeps the larger of the two),
so two calls of one user finishing in any order never lower it. It expires a
while after the user's last call: by then every replica in rotation has long
replayed it (a replica further behind than TASKGATE_DATABASE_REPLICA_MAX_LAG
leaves the rotation).
"""

from __future__ import annotations

import functools
from uuid import UUID

from redis.commands.core import AsyncScript

from server.storage.redis.client import RedisRepository

POSITION_TTL_SECONDS = 3600

# KEYS[1] the user's position; ARGV[1] a position; ARGV[2] the TTL in seconds.
_ADVANCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 0
"""


class WalPositions(RedisRepository):
    @functools.cached_property
    def _advance(self) -> AsyncScript:
        return self._redis.register_script(_ADVANCE)

    async def get(self, user_id: UUID) -> int:
        """The user's position (a byte offset in the WAL); 0 when none is known."""
        async with self._call("wal_position_get"):
            value = await self._redis.get(self._keys.wal_position(user_id))
        return int(value) if value else 0

    async def advance(self, user_id: UUID, position: int) -> None:
        """Raise the user's position to ``position`` (never lower it)."""
        async with self._call("wal_position_advance"):
            await self._advance(
                keys=[self._keys.wal_position(user_id)], args=[position, POSITION_TTL_SECONDS]
            )
