from __future__ import annotations

import uuid
from datetime import UTC, datetime

from server.models import User
from server.services.user_cache import UserCache


def user(name: str) -> User:
    return User(id=uuid.uuid4(), username=name, created_at=datetime.now(UTC))


def test_least_recently_used_goes_first() -> None:
    cache = UserCache(max_size=2)
    a, b, c = user("a"), user("b"), user("c")
    cache.put(a)
    cache.put(b)
    assert cache.get(a.id) == a  # a is now the most recent
    cache.put(c)
    assert len(cache) == 2
    assert cache.get(b.id) is None
    assert cache.get(a.id) == a
    assert cache.get(c.id) == c


def test_evict_and_disabled() -> None:
    cache = UserCache(max_size=10)
    a = user("a")
    cache.put(a)
    cache.evict(a.id)
    cache.evict(a.id)
    assert cache.get(a.id) is None
    off = UserCache(max_size=0)
    off.put(a)
    assert off.get(a.id) is None
    assert len(off) == 0


def test_an_entry_is_dropped_at_its_maximum_age() -> None:
    now = [0.0]
    cache = UserCache(max_size=10, max_age=60.0, clock=lambda: now[0])
    a = user("a")
    cache.put(a)
    now[0] = 59.9
    assert cache.get(a.id) == a  # at the edge: still served
    now[0] = 60.0
    assert cache.get(a.id) is None
    assert len(cache) == 0
