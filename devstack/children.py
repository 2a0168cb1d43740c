"""Child processes the stack starts, and stops again: each in a session of its
own (a terminal's Ctrl-C reaches only the supervisor, which stops them in
order), each ended by the kernel if the supervisor dies (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

log = logging.getLogger("devstack")

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildExited(RuntimeError):
    """A child ended before it was asked to."""


class Child:
    """One running program; its output goes to ``log_file`` or to ours."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: Mapping[str, str],
        stop_signal: signal.Signals = signal.SIGTERM,
        log_file: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.log_file = log_file
        output: IO[bytes] | None = None
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            output = log_file.open("ab")
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own argv
                argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if output is not None:
                output.close()
        log.debug("started %s (pid %d)", name, self.process.pid)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def check(self) -> None:
        """Raise ChildExited (with the end of its log) when it has stopped."""
        code = self.process.poll()
        if code is not None:
            raise ChildExited(f"{self.name} exited with status {code}{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        return f"; the end of {self.log_file}:\n  " + "\n  ".join(tail)

    def stop(self, timeout: float) -> int:
        """Ask it to stop with its stop signal; kill it after ``timeout`` seconds."""
        if self.running:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs: killing it", self.name, timeout)
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_until(ready: Callable[[], bool], *, child: Child, timeout: float, what: str) -> None:
    """Poll ``ready()`` until true; fail early if ``child`` exits, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        child.check()
        if ready():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s{child.log_tail()}")
        time.sleep(0.1)
