"""Login and abuse-limit metrics, created on a registry passed in.

- ``sessions_created_total``: logins that opened a session;
- ``login_failures_total{reason}``: logins refused for their credentials:
  ``wrong_password``, ``unknown_user``, ``user_deleted`` (deleted during the login);
- ``rate_limit_refusals_total{limit}``: calls refused by a limit: ``client_login``
  and ``client_register`` (per client address), ``login_lockout`` (failed logins
  per username and address), ``password_hashing`` (the hashing pool is full).

Every label value exists from the start (at 0), so a rate over them is defined.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter

LOGIN_FAILURE_REASONS = ("wrong_password", "unknown_user", "user_deleted")
LIMITS = ("client_login", "client_register", "login_lockout", "password_hashing")


class AuthMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sessions_created = Counter(
            "sessions_created", "Logins that opened a session.", registry=registry
        )
        failures = Counter(
            "login_failures", "Logins refused for their credentials, by reason.",
            ["reason"], registry=registry,
        )  # fmt: skip
        refusals = Counter(
            "rate_limit_refusals", "Calls refused by an abuse limit, by limit.",
            ["limit"], registry=registry,
        )  # fmt: skip
        self._failures: dict[str, Any] = {r: failures.labels(r) for r in LOGIN_FAILURE_REASONS}
        self._refusals: dict[str, Any] = {limit: refusals.labels(limit) for limit in LIMITS}

    def login_failed(self, reason: str) -> None:
        self._failures[reason].inc()

    def refused(self, limit: str) -> None:
        self._refusals[limit].inc()
