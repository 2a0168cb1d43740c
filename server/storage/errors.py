"""Storage errors: what the repositories raise, whatever the driver.

``StorageUnavailable`` is already a domain error (UNAVAILABLE): a database that
cannot be reached means the same thing to every caller. ``UniqueViolation``
keeps the constraint's name for the service to translate.
"""

from __future__ import annotations

from server.errors import Unavailable


class StorageUnavailable(Unavailable):
    """Postgres or Redis could not be reached, or did not answer in time."""


class UniqueViolation(Exception):
    def __init__(self, constraint: str | None) -> None:
        super().__init__(f"unique constraint violated: {constraint}")
        self.constraint = constraint
