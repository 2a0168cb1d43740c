"""Storage errors: what the repositories raise, whatever the driver.

``StorageUnavailable`` is already a domain error (UNAVAILABLE): a database that
cannot be reached means the same thing to every caller. ``UniqueViolation``
keeps the constraint's name for the service to translate.
"""

from __future__ import annotations

from server.context import deadline_passed
from server.errors import DeadlineExceeded, TaskgateError, Unavailable


class StorageUnavailable(Unavailable):
    """Postgres or Redis could not be reached, or did not answer in time."""


def timed_out(what: str) -> TaskgateError:
    """A storage call ran out of time: the caller's deadline, or the store's fault."""
    if deadline_passed():
        return DeadlineExceeded(f"the deadline passed while waiting for {what}")
    return StorageUnavailable(f"{what} did not answer in time")


class UniqueViolation(Exception):
    def __init__(self, constraint: str | None) -> None:
        super().__init__(f"unique constraint violated: {constraint}")
        self.constraint = constraint
