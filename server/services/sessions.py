"""Logging in and out, and resolving bearer tokens to users.

A successful login also returns a *device token* (OWASP's "device cookie"):
proof that this client logged in as this user before. A later login that
sends it back, for the same user, has its password checked in the hashing
pool's trusted lane (:mod:`server.passwords`), ahead of every login that
cannot show one: a guessing flood cannot keep a returning user out. The token
is no credential (the password is still checked); each successful login
replaces it with a new one (so a copied token dies at the owner's next login),
and a wrong password sent with it revokes it, so a stolen one buys at most one
early guess.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from server.errors import NotFound, ResourceExhausted, Unauthenticated
from server.metrics_auth import AuthMetrics
from server.models import Credentials, Session
from server.passwords import PasswordHasher
from server.services import rules
from server.services.limits import Attempt, ClientLimits, client_address
from server.storage.postgres.users import UserRepository
from server.storage.redis.devices import DeviceTokenRepository
from server.storage.redis.sessions import SessionRepository

BAD_LOGIN = "wrong username or password"


@dataclass(frozen=True, slots=True)
class Login:
    session: Session
    device_token: str


def utcnow() -> datetime:
    return datetime.now(UTC)


class SessionService:
    def __init__(
        self,
        *,
        users: UserRepository,
        sessions: SessionRepository,
        hasher: PasswordHasher,
        ttl: float,
        login_limit: int,
        login_window: float,
        client_limits: ClientLimits,
        devices: DeviceTokenRepository,
        device_token_ttl: float,
        clock: Callable[[], datetime] = utcnow,
        metrics: AuthMetrics | None = None,
    ) -> None:
        self._devices = devices
        self._device_token_ttl = device_token_ttl
        self._users = users
        self._sessions = sessions
        self._hasher = hasher
        self._ttl = timedelta(seconds=ttl)
        self._login_limit = login_limit
        self._login_window = login_window
        self._client_limits = client_limits
        self._clock = clock
        self._metrics = metrics

    async def login(self, username: str, password: str, device_token: str = "") -> Login:
        """A new session (and a device token) for the right password.

        Wrong passwords are counted per username and client address, and only
        once the password was checked and found wrong: a call that is cancelled,
        times out or meets an outage costs nothing, an unknown username leaves
        no key, and a stranger elsewhere cannot lock the owner out.
        """
        rules.check_credentials(username, password, login=True)
        rules.check_device_token(device_token)
        if not device_token:  # its lane is known: no Redis or Postgres for a hash with no room
            self._hasher.check_room(key=username)
        client = client_address()
        await self._client_limits.check("login")
        await self._check_not_locked(username, client)
        credentials = await self._users.get_credentials(username)
        trusted = await self._proves_login(device_token, credentials)
        async with self._client_limits.attempt("login") as attempt:
            credentials = await self._check_password(
                username,
                password,
                credentials,
                trusted_token=device_token if trusted else "",
                attempt=attempt,
            )
            session = await self._open(credentials)
            token = secrets.token_urlsafe(32)
            await self._devices.save(
                token,
                credentials.id,
                self._device_token_ttl,
                replacing=device_token if trusted else "",
            )
        if self._metrics is not None:
            self._metrics.sessions_created.inc()
        return Login(session=session, device_token=token)

    async def _proves_login(self, device_token: str, credentials: Credentials | None) -> bool:
        if not device_token or credentials is None:
            return False
        return await self._devices.owner(device_token) == credentials.id

    async def _check_password(
        self,
        username: str,
        password: str,
        credentials: Credentials | None,
        *,
        trusted_token: str,
        attempt: Attempt,
    ) -> Credentials:
        """The user's credentials if ``password`` is theirs; ``trusted_token``: the device
        token that proved an earlier login ("" if none did), revoked by a wrong password."""
        password_hash = credentials.password_hash if credentials else None
        right = await self._hasher.verify(
            password_hash,
            password,
            key=username,
            trusted=bool(trusted_token),
            on_start=attempt.hash_started,
        )
        attempt.hash_ended()
        if credentials is None:
            raise self._failed("unknown_user")
        if not right:
            if trusted_token:
                await self._devices.revoke(trusted_token)
            await self._sessions.count_login_failure(username, client_address(), self._login_window)
            raise self._failed("wrong_password")
        return credentials

    async def _open(self, credentials: Credentials) -> Session:
        now = self._clock()
        session = Session(
            id=secrets.token_urlsafe(32),
            user_id=credentials.id,
            created_at=now,
            expires_at=now + self._ttl,
        )
        await self._sessions.create(session)
        # A DeleteUser during the hash may have revoked the user's sessions before
        # this one existed: a session must not outlive its user.
        if await self._users.get(credentials.id, latest=True) is None:
            await self._sessions.delete(session)
            raise self._failed("user_deleted")
        return session

    def _failed(self, reason: str) -> Unauthenticated:
        if self._metrics is not None:
            self._metrics.login_failed(reason)
        return Unauthenticated(BAD_LOGIN)

    async def _check_not_locked(self, username: str, client: str) -> None:
        failures, retry_after = await self._sessions.login_failures(username, client)
        if failures >= self._login_limit:
            if self._metrics is not None:
                self._metrics.refused("login_lockout")
            raise ResourceExhausted(
                f"too many failed logins for {username!r}; try again in {retry_after:.0f}s",
                retry_after=retry_after,
            )

    async def authenticate(self, token: str) -> UUID:
        """The user a bearer token belongs to; UNAUTHENTICATED if it is not a live session."""
        owner = None
        if rules.looks_like_session_id(token):
            owner = await self._sessions.owner(token)
        if owner is None:
            raise Unauthenticated("the session is invalid or has expired; log in again")
        return owner

    async def get(self, caller: UUID, session_id: str) -> Session:
        rules.check_session_id(session_id)
        session = await self._sessions.get(session_id)
        if session is None or session.user_id != caller:
            raise NotFound("session not found")
        return session

    async def logout(self, caller: UUID, session_id: str) -> None:
        session = await self.get(caller, session_id)
        await self._sessions.delete(session)
