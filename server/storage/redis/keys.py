"""Every Redis key taskgate writes, in one place, under one prefix."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = "taskgate:"

    def session(self, session_id: str) -> str:
        """Hash: user_id, created_at, expires_at, is_active; expires with the session."""
        return f"{self.prefix}session:{session_id}"

    def user_sessions(self, user_id: UUID) -> str:
        """Set of the user's session ids, for revoking them all."""
        return f"{self.prefix}user-sessions:{user_id}"

    def login_failures(self, username: str, client: str) -> str:
        """Counter of wrong passwords for an existing user from one client address."""
        return f"{self.prefix}login-failures:{username}:{client}"

    def wal_position(self, user_id: UUID) -> str:
        """The WAL position a user's reads must have reached (their last write or read)."""
        return f"{self.prefix}wal-position:{user_id}"

    def client_attempts(self, action: str, client: str) -> str:
        """Counter of password-hashing calls (``login``, ``register``) from one address."""
        return f"{self.prefix}client-{action}:{client}"

    def device_token(self, token: str) -> str:
        """String: the id of the user a device token proves a login of; expires with it."""
        return f"{self.prefix}device-token:{token}"
