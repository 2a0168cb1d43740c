"""A bounded, per-process cache of user records, each kept for at most ``max_age``.

A user record never changes (username and creation time are immutable), and a
deleted user has no live session: DeleteUser revokes them all, and a login that
races the delete removes its own session when it finds the user gone. So every
caller that passed authentication finds its own record either here or in
Postgres with the same content: ``get`` of another user never gets this far
(NOT_FOUND), and a delete evicts the entry in the process that served it.

Other processes learn of a delete only through the sessions, so the cache does
not rely on them alone: an entry is also dropped ``max_age`` seconds after it
was read from Postgres, which bounds how long any process can serve a deleted
user should a session ever outlive it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from uuid import UUID

from server.models import User


class UserCache:
    def __init__(
        self,
        *,
        max_size: int,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_size = max_size
        self._max_age = max_age
        self._clock = clock
        self._users: OrderedDict[UUID, tuple[User, float]] = OrderedDict()

    def get(self, user_id: UUID) -> User | None:
        entry = self._users.get(user_id)
        if entry is None:
            return None
        user, expires = entry
        if self._clock() >= expires:
            del self._users[user_id]
            return None
        self._users.move_to_end(user_id)
        return user

    def put(self, user: User) -> None:
        if self._max_size <= 0:
            return
        self._users[user.id] = (user, self._clock() + self._max_age)
        self._users.move_to_end(user.id)
        while len(self._users) > self._max_size:
            self._users.popitem(last=False)

    def evict(self, user_id: UUID) -> None:
        self._users.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._users)
