"""A bounded, per-process cache of user records.

A user record never changes (username and creation time are immutable) and a
deleted user has lost every session before the row goes, so every caller that
passed authentication finds its own record either here or in Postgres with the
same content. That makes the cache safe without cross-process invalidation:
``get`` of another user never gets this far (NOT_FOUND), and a delete evicts
the entry in the process that served it.
"""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID

from server.models import User


class UserCache:
    def __init__(self, *, max_size: int) -> None:
        self._max_size = max_size
        self._users: OrderedDict[UUID, User] = OrderedDict()

    def get(self, user_id: UUID) -> User | None:
        user = self._users.get(user_id)
        if user is not None:
            self._users.move_to_end(user_id)
        return user

    def put(self, user: User) -> None:
        if self._max_size <= 0:
            return
        self._users[user.id] = user
        self._users.move_to_end(user.id)
        while len(self._users) > self._max_size:
            self._users.popitem(last=False)

    def evict(self, user_id: UUID) -> None:
        self._users.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._users)
