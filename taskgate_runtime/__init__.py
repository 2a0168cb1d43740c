"""What every taskgate process does around its work, in one place.

The server, the standalone processor, the gateway and ``make run`` (devstack)
import this package; it imports none of them:

- :mod:`taskgate_runtime.settings`: settings primitives on pydantic-settings
  (durations, addresses, the ``TASKGATE_`` prefix, one-line errors naming the
  variable) and the pieces every process shares: logging, database, Redis;
- :mod:`taskgate_runtime.logs`: JSON log lines with the ids bound for a call or a task;
- :mod:`taskgate_runtime.process`: the process main (settings, logging, signals, exit codes);
- :mod:`taskgate_runtime.metrics_http`: a process's own registry served on ``/metrics``.
"""
