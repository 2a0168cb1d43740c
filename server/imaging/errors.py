"""Errors of the image pipeline.

::

    UnprocessableImage          the input cannot be processed: retrying cannot help
    └── FilterFailed            one step failed on its input (a crop outside the image)
    PipelineCancelled           cancellation was asked for between two steps

Each one pickles (its ``args`` are its constructor's arguments), so it crosses
the process boundary of a ``ProcessPoolExecutor`` intact. Anything else a
pipeline raises is a bug, not a property of the input.
"""

from __future__ import annotations


class UnprocessableImage(Exception):
    """The input image cannot be processed; ``message`` says why, for the task's owner."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class FilterFailed(UnprocessableImage):
    """Step ``index`` failed on its input: ``filters[2].crop: the box ... lies outside ...``."""

    def __init__(self, index: int, message: str) -> None:
        Exception.__init__(self, index, message)
        self.index = index
        self.message = message


class PipelineCancelled(Exception):
    """The pipeline stopped, as asked, after ``done`` steps."""

    def __init__(self, done: int) -> None:
        super().__init__(done)
        self.done = done

    def __str__(self) -> str:
        return f"cancelled after {self.done} filter(s)"
