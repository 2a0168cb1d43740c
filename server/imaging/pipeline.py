"""Checking a pipeline before it is accepted, and running it.

:func:`validate_pipeline` runs in the API: it checks every step's parameters
and simulates the image's size through the pipeline (sizes are exact, see
``filters.output_size``), so a step that would make too many pixels or crop
outside the image is refused up front.

:func:`run_pipeline` runs in a worker process (``ProcessPoolExecutor``): it is a
module-level function taking and returning plain, picklable values, and the
errors it raises pickle too. It raises :class:`UnprocessableImage` (or its
:class:`FilterFailed`) when the input cannot be processed, which no retry can
change, and :class:`PipelineCancelled` when ``cancelled()`` says so between two
steps; any other exception is a bug.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.errors import FieldViolation
from server.imaging.errors import FilterFailed, PipelineCancelled, UnprocessableImage
from server.imaging.filters import (
    FilterStep,
    Size,
    apply,
    fit_problem,
    output_size,
    step_violations,
)
from server.imaging.images import decode, encode, encode_problem
from server.request_rules import declared, expect_declared, field_rule
from taskgate.v1 import task_service_pb2

_FILTERS = field_rule(task_service_pb2.CreateTaskRequest, "filters")
expect_declared(_FILTERS.min_items == 1, "filters' min_items of 1")  # as the message says
MAX_FILTERS = declared(_FILTERS.max_items, "filters' max_items")


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """The encoded result and its size."""

    data: bytes
    content_type: str
    width: int
    height: int


def validate_pipeline(
    steps: Sequence[FilterStep],
    size: Size,
    *,
    max_pixels: int,
    max_filters: int = MAX_FILTERS,
    output_format: str | None = None,
) -> list[FieldViolation]:
    """Every problem of a pipeline on an image of ``size``; empty when it may run.

    Sizes are simulated through the steps up to the first one with a bad
    parameter; the first step that would not fit (a crop outside the image) or
    would produce more than ``max_pixels`` pixels is reported on
    ``filters[i].<name>``. With ``output_format`` the final size is checked
    against the format's largest side too (WebP: 16383).
    """
    if not 1 <= len(steps) <= max_filters:
        return [FieldViolation("filters", f"must have 1 to {max_filters} filters")]
    violations: list[FieldViolation] = []
    valid: list[FilterStep] = []
    for index, step in enumerate(steps):
        found = step_violations(step, index)
        violations += found
        if not found and len(valid) == index:
            valid.append(step)
    violations += _size_violations(valid, size, max_pixels)
    if not violations and output_format is not None:
        problem = encode_problem(final_size(steps, size), output_format)
        if problem is not None:
            violations.append(FieldViolation("output_format", problem))
    return violations


def final_size(steps: Sequence[FilterStep], size: Size) -> Size:
    """The size of the result of valid steps that fit."""
    for step in steps:
        size = output_size(step, size)
    return size


def _size_violations(
    steps: Sequence[FilterStep], size: Size, max_pixels: int
) -> list[FieldViolation]:
    for index, step in enumerate(steps):
        problem = _size_problem(step, size, max_pixels)
        if problem is not None:
            return [FieldViolation(f"filters[{index}].{step.name}", problem)]
        size = output_size(step, size)
    return []


def _size_problem(step: FilterStep, size: Size, max_pixels: int | None) -> str | None:
    problem = fit_problem(step, size)
    if problem is not None or max_pixels is None:
        return problem
    width, height = output_size(step, size)
    if width * height <= max_pixels:
        return None
    return (
        f"would produce {width}x{height} = {width * height} pixels; "
        f"the limit is {max_pixels} pixels"
    )


def _no_progress(done: int) -> None:
    pass


def _not_cancelled() -> bool:
    return False


def run_pipeline(
    data: bytes,
    steps: Sequence[FilterStep],
    output_format: str,
    *,
    on_step: Callable[[int], None] = _no_progress,
    cancelled: Callable[[], bool] = _not_cancelled,
    max_pixels: int | None = None,
    max_result_bytes: int | None = None,
) -> PipelineResult:
    """Decode ``data``, apply ``steps`` in order, encode as ``output_format`` (png, jpeg, webp).

    After each step ``on_step(steps done)``; before each step but the first,
    ``cancelled()`` — true raises :class:`PipelineCancelled`. Steps are checked
    again here (bad parameters, a crop outside the image, more than
    ``max_pixels`` pixels when given): such a step raises :class:`FilterFailed`
    before it runs. A result larger than ``max_result_bytes`` (when given) raises
    :class:`UnprocessableImage`, naming both sizes and what would make it smaller.
    """
    for index, step in enumerate(steps):
        violations = step_violations(step, index)
        if violations:
            problems = "; ".join(f"{v.field}: {v.description}" for v in violations)
            raise FilterFailed(index, problems)
    image = decode(data)
    for index, step in enumerate(steps):
        if index and cancelled():
            raise PipelineCancelled(index)
        problem = _size_problem(step, image.size, max_pixels)
        if problem is not None:
            raise FilterFailed(index, f"filters[{index}].{step.name}: {problem}")
        image = apply(step, image, index=index)
        on_step(index + 1)
    problem = encode_problem(image.size, output_format)
    if problem is not None:
        raise UnprocessableImage(problem)
    encoded, content_type = encode(image, output_format)
    if max_result_bytes is not None and len(encoded) > max_result_bytes:
        raise UnprocessableImage(result_too_large(len(encoded), max_result_bytes, output_format))
    return PipelineResult(encoded, content_type, image.width, image.height)


def result_too_large(size: int, limit: int, output_format: str) -> str:
    """Why a result of ``size`` bytes is refused, and what would make it fit."""
    others = " or ".join(f.upper() for f in ("jpeg", "webp") if f != output_format)
    smaller = f"choose {others} as the output format, or " if output_format == "png" else ""
    return (
        f"the result would be {size} bytes as {output_format.upper()}; the limit is "
        f"{limit} bytes: {smaller}make the image smaller (resize or thumbnail)"
    )


def filters_used(steps: Sequence[FilterStep]) -> list[str]:
    """The filter name of each step, in order, repeats included (for ``filters_used_total``)."""
    return [step.name for step in steps]
