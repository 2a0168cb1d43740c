"""Pipelines: checked before they are accepted, run with progress and cancellation."""

from __future__ import annotations

import io
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar, cast

import pytest
from PIL import Image

from server.errors import FieldViolation
from server.imaging.errors import FilterFailed, PipelineCancelled, UnprocessableImage
from server.imaging.filters import FilterStep
from server.imaging.pipeline import (
    PipelineResult,
    filters_used,
    final_size,
    run_pipeline,
    validate_pipeline,
)

GRAY = FilterStep("grayscale", {})
BLUR = FilterStep("blur", {"radius": 1.5})
INVERT = FilterStep("invert", {})
T = TypeVar("T")


def png(size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    image = Image.linear_gradient("L").resize(size).convert(mode)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize(size))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def resize(width: int, height: int) -> FilterStep:
    return FilterStep("resize", {"width": width, "height": height})


def crop(left: int, top: int, right: int, bottom: int) -> FilterStep:
    return FilterStep("crop", {"left": left, "top": top, "right": right, "bottom": bottom})


def rotate(degrees: float, expand: bool = True) -> FilterStep:
    return FilterStep("rotate", {"degrees": degrees, "expand": expand})


# --- validate_pipeline --------------------------------------------------------------------


def test_one_to_twenty_filters() -> None:
    many = "must have 1 to 20 filters"
    assert validate_pipeline([], (10, 10), max_pixels=100) == [FieldViolation("filters", many)]
    assert validate_pipeline([GRAY] * 20, (10, 10), max_pixels=100) == []
    assert validate_pipeline([GRAY] * 21, (10, 10), max_pixels=100) == [
        FieldViolation("filters", many)
    ]
    assert validate_pipeline([GRAY] * 3, (10, 10), max_pixels=100, max_filters=2) == [
        FieldViolation("filters", "must have 1 to 2 filters")
    ]


def test_every_bad_parameter_of_every_step() -> None:
    steps = [GRAY, FilterStep("blur", {"radius": 0.0}), resize(0, 10001), FilterStep("x", {})]
    assert [v.field for v in validate_pipeline(steps, (10, 10), max_pixels=100)] == [
        "filters[1].blur.radius",
        "filters[2].resize.width",
        "filters[2].resize.height",
        "filters[3]",
    ]


def test_pixels_produced_at_the_limit_and_past_it() -> None:
    assert validate_pipeline([GRAY, resize(100, 100)], (10, 10), max_pixels=10_000) == []
    assert validate_pipeline([GRAY, resize(100, 101)], (10, 10), max_pixels=10_000) == [
        FieldViolation(
            "filters[1].resize",
            "would produce 100x101 = 10100 pixels; the limit is 10000 pixels",
        )
    ]
    big = [GRAY, GRAY, GRAY, resize(10_000, 10_000)]
    [found] = validate_pipeline(big, (10, 10), max_pixels=40_000_000)
    assert found.field == "filters[3].resize"
    assert found.description.startswith("would produce 10000x10000 = 100000000 pixels")


def test_an_expanding_rotate_counts() -> None:
    size = (1000, 1000)
    assert validate_pipeline([rotate(45, expand=False)], size, max_pixels=1_000_000) == []
    [found] = validate_pipeline([rotate(45)], size, max_pixels=1_000_000)
    assert found.field == "filters[0].rotate"
    assert "would produce 1416x1416 = 2005056 pixels" in found.description
    assert validate_pipeline([rotate(45)], size, max_pixels=2_005_056) == []
    assert validate_pipeline([rotate(90)], (2000, 500), max_pixels=1_000_000) == []


def test_a_crop_outside_the_image_at_its_step() -> None:
    steps = [resize(50, 40), crop(0, 0, 50, 40), crop(10, 10, 60, 20)]
    assert validate_pipeline(steps, (640, 480), max_pixels=10**6) == [
        FieldViolation("filters[2].crop", "the box (10, 10, 60, 20) lies outside the 50x40 image")
    ]
    assert validate_pipeline([crop(0, 0, 640, 480)], (640, 480), max_pixels=10**6) == []


def test_sizes_are_simulated_up_to_the_first_bad_step() -> None:
    steps = [resize(200, 200), FilterStep("blur", {"radius": -1.0}), resize(5000, 5000)]
    assert [v.field for v in validate_pipeline(steps, (10, 10), max_pixels=100)] == [
        "filters[1].blur.radius",
        "filters[0].resize",
    ]


def test_the_output_format_limits_the_final_size() -> None:
    steps, size = [GRAY], (16_384, 1)
    assert validate_pipeline(steps, size, max_pixels=10**6, output_format="png") == []
    assert validate_pipeline(steps, size, max_pixels=10**6) == []
    assert validate_pipeline(steps, (16_383, 1), max_pixels=10**6, output_format="webp") == []
    [found] = validate_pipeline(steps, size, max_pixels=10**6, output_format="webp")
    assert found.field == "output_format"
    assert "16383 pixels a side" in found.description


# --- run_pipeline -------------------------------------------------------------------------


def test_a_pipeline_runs_and_reports_progress() -> None:
    steps = [GRAY, BLUR, resize(20, 10), rotate(30), FilterStep("thumbnail", {"max_side": 16})]
    done: list[int] = []
    result = run_pipeline(png(), steps, "png", on_step=done.append)
    assert done == [1, 2, 3, 4, 5]
    assert (result.width, result.height) == final_size(steps, (40, 30))
    assert result.content_type == "image/png"
    image = Image.open(io.BytesIO(result.data))
    assert (image.format, image.size, image.mode) == ("PNG", (result.width, result.height), "L")


@pytest.mark.parametrize(
    ("fmt", "mode", "content_type"),
    [("png", "RGBA", "image/png"), ("jpeg", "RGB", "image/jpeg"), ("webp", "RGBA", "image/webp")],
)
def test_results_in_every_format(fmt: str, mode: str, content_type: str) -> None:
    result = run_pipeline(png(mode="RGBA"), [INVERT, resize(17, 9)], fmt)
    image = Image.open(io.BytesIO(result.data))
    assert (result.content_type, image.size, image.mode) == (content_type, (17, 9), mode)


def test_cancellation_between_steps() -> None:
    done: list[int] = []
    asked: list[int] = []

    def cancelled() -> bool:
        asked.append(len(done))
        return len(done) == 2

    with pytest.raises(PipelineCancelled) as caught:
        run_pipeline(
            png(), [GRAY, BLUR, INVERT, BLUR], "png", on_step=done.append, cancelled=cancelled
        )
    assert caught.value.done == 2
    assert str(caught.value) == "cancelled after 2 filter(s)"
    assert done == [1, 2]
    assert asked == [1, 2]  # never before the first step


def test_a_cancel_asked_after_the_last_step_is_too_late() -> None:
    result = run_pipeline(png(), [GRAY], "png", cancelled=lambda: True)
    assert (result.width, result.height) == (40, 30)


def test_a_crop_outside_the_image_at_run_time() -> None:
    done: list[int] = []
    with pytest.raises(FilterFailed) as caught:
        run_pipeline(png((640, 480)), [GRAY, crop(0, 0, 900, 10)], "png", on_step=done.append)
    assert caught.value.index == 1
    assert caught.value.message == (
        "filters[1].crop: the box (0, 0, 900, 10) lies outside the 640x480 image"
    )
    assert str(caught.value) == caught.value.message
    assert done == [1]


def test_bad_parameters_fail_before_any_work() -> None:
    done: list[int] = []
    steps = [GRAY, FilterStep("blur", {"radius": "NaN"})]
    with pytest.raises(FilterFailed) as caught:
        run_pipeline(png(), steps, "png", on_step=done.append)
    assert caught.value.index == 1
    assert caught.value.message == "filters[1].blur.radius: must be a finite number"
    assert done == []


def test_the_pixel_limit_holds_at_run_time() -> None:
    with pytest.raises(FilterFailed, match=r"filters\[0\].resize: would produce 101x100"):
        run_pipeline(png(), [resize(101, 100)], "png", max_pixels=10_000)
    assert run_pipeline(png(), [resize(100, 100)], "png", max_pixels=10_000).width == 100


def test_input_that_does_not_decode_or_encode() -> None:
    with pytest.raises(UnprocessableImage, match="could not be decoded"):
        run_pipeline(b"not an image", [GRAY], "png")
    with pytest.raises(UnprocessableImage, match="16383 pixels a side"):
        run_pipeline(png((16_384, 1)), [GRAY], "webp")


def test_an_unexpected_error_propagates() -> None:
    def broken(done: int) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_pipeline(png(), [GRAY], "png", on_step=broken)


def test_filters_used() -> None:
    assert filters_used([GRAY, BLUR, GRAY]) == ["grayscale", "blur", "grayscale"]


# --- across a process boundary ------------------------------------------------------------


def round_trip(value: T) -> T:
    """What a ProcessPoolExecutor does to arguments, results and exceptions."""
    return cast(T, pickle.loads(pickle.dumps(value)))  # noqa: S301 - our own bytes


def test_errors_and_results_pickle() -> None:
    failed = round_trip(FilterFailed(2, "filters[2].crop: outside"))
    assert (type(failed), failed.index, failed.message) == (
        FilterFailed,
        2,
        "filters[2].crop: outside",
    )
    unprocessable = round_trip(UnprocessableImage("bad"))
    assert unprocessable.message == "bad"
    assert round_trip(PipelineCancelled(3)).done == 3
    result = PipelineResult(b"x", "image/png", 1, 2)
    assert round_trip(result) == result
    assert round_trip(BLUR) == BLUR


def test_it_runs_in_a_process_pool() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        result = pool.submit(run_pipeline, png(), [GRAY, resize(8, 6)], "png").result()
        assert (result.width, result.height) == (8, 6)
        failure = pool.submit(run_pipeline, png(), [crop(0, 0, 99, 9)], "png").exception()
    assert isinstance(failure, FilterFailed)
    assert failure.index == 0
