"""``watch``: a progress bar (tqdm, on stderr) that follows a task until it ends.

The stream is read to its end (the server closes it once the task has ended)
rather than dropped at the last state: a call the client cancels is work for the
server, and the server's own end is the clean one."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm

from taskgate.v1 import task_service_pb2 as task_pb
from taskgate_client.cli.output import as_dict, emit_json, note, status_name

BAR = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} filters [{elapsed}]"


def follow(updates: Iterable[task_pb.Task], *, json_lines: bool) -> task_pb.Task | None:
    """The task's last state; JSON lines, or a bar that shows progress and status."""
    last: task_pb.Task | None = None
    if json_lines:
        for last in updates:
            emit_json(as_dict(last))
        return last
    if not sys.stderr.isatty():
        return _lines(updates)
    # progress counts the filters done, up to all of them when the task completes
    with tqdm(total=None, unit="filter", bar_format=BAR) as bar:
        for last in updates:
            bar.total = max(len(last.filters), 1)
            bar.set_description(f"{last.task_id[:8]} {status_name(last.status)}")
            bar.update(last.progress - bar.n)
    return last


def _lines(updates: Iterable[task_pb.Task]) -> task_pb.Task | None:
    """Not a terminal (a log, a pipe): one line per change instead of a redrawn bar."""
    last: task_pb.Task | None = None
    for last in updates:
        done = f"{last.progress}/{len(last.filters)}"
        note(f"{last.task_id[:8]} {status_name(last.status)} {done} filters")
    return last
