"""The filter catalogue: parameters at their edges, exact output sizes, every mode."""

from __future__ import annotations

import math
import random
from typing import cast

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from PIL import Image, ImageChops

from server.errors import FieldViolation
from server.imaging import filters
from server.imaging.errors import FilterFailed
from server.imaging.filters import CATALOGUE, FilterStep, apply, output_size, step_violations
from taskgate.v1 import task_service_pb2 as pb

MODES = ("L", "LA", "RGB", "RGBA")
EXAMPLES: dict[str, dict[str, filters.ParamValue]] = {
    "grayscale": {},
    "blur": {"radius": 2.0},
    "sharpen": {},
    "resize": {"width": 7, "height": 5},
    "rotate": {"degrees": 30.0, "expand": True},
    "flip": {"direction": "DIRECTION_VERTICAL"},
    "crop": {"left": 1, "top": 2, "right": 9, "bottom": 7},
    "brightness": {"factor": 1.5},
    "contrast": {"factor": 0.5},
    "invert": {},
    "edge_detect": {},
    "thumbnail": {"max_side": 10},
}


def sample(mode: str = "RGB", size: tuple[int, int] = (24, 16)) -> Image.Image:
    """An image with structure in every band, alpha included."""
    base = Image.radial_gradient("L").resize(size)
    rgb = Image.merge(
        "RGB",
        (
            base,
            base.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            base.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        ),
    )
    image = rgb.convert("L") if mode.startswith("L") else rgb
    if mode.endswith("A"):
        image.putalpha(base.transpose(Image.Transpose.ROTATE_180))
    return image


def fields(step: FilterStep) -> list[str]:
    return [v.field for v in step_violations(step, 3)]


def step_from(message: pb.Filter) -> FilterStep:
    """A step as the task service builds it from a Filter message."""
    as_dict = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    ((name, params),) = as_dict.items()
    return FilterStep(name, params)


# --- the catalogue against the proto ------------------------------------------------------

_TYPES = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_ENUM: "enum",
}


def test_the_catalogue_is_the_filter_oneof_in_order() -> None:
    oneof = pb.Filter.DESCRIPTOR.oneofs_by_name["filter"]
    assert [spec.name for spec in CATALOGUE] == [f.name for f in oneof.fields]
    for spec, field in zip(CATALOGUE, oneof.fields, strict=True):
        assert field.message_type is not None
        message_fields = field.message_type.fields
        assert [(p.name, p.type) for p in spec.parameters] == [
            (f.name, _TYPES[f.type]) for f in message_fields
        ]
        assert spec.description
        assert all(p.description for p in spec.parameters)
    assert set(EXAMPLES) == {spec.name for spec in CATALOGUE}


def test_the_descriptions_name_the_ranges() -> None:
    described = {(s.name, p.name): p.description for s in CATALOGUE for p in s.parameters}
    assert "greater than 0 and at most 100" in described["blur", "radius"]
    assert "1-10000" in described["resize", "width"]
    assert "-360 to 360" in described["rotate", "degrees"]
    assert "0-10" in described["contrast", "factor"]
    assert "DIRECTION_HORIZONTAL" in described["flip", "direction"]


# --- parameters at their edges ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("blur", {"radius": 100.0}),
        ("blur", {"radius": 100}),
        ("blur", {"radius": 0.0001}),
        ("resize", {"width": 10000, "height": 1}),
        ("resize", {"width": 1, "height": 10000}),
        ("rotate", {"degrees": 360.0, "expand": True}),
        ("rotate", {"degrees": -360.0, "expand": False}),
        ("rotate", {"degrees": 0.0}),
        ("flip", {"direction": "DIRECTION_HORIZONTAL"}),
        ("flip", {"direction": 2}),
        ("crop", {"left": 0, "top": 0, "right": 1, "bottom": 1}),
        ("brightness", {"factor": 10.0}),
        ("brightness", {"factor": 0.0}),
        ("contrast", {"factor": 10}),
        ("contrast", {"factor": 0}),
        ("thumbnail", {"max_side": 1}),
        ("thumbnail", {"max_side": 10000}),
        ("grayscale", {}),
    ],
)
def test_values_at_the_edge_are_accepted(name: str, params: dict[str, filters.ParamValue]) -> None:
    assert step_violations(FilterStep(name, params), 0) == []


@pytest.mark.parametrize(
    ("name", "params", "bad", "description"),
    [
        ("blur", {"radius": 100.0001}, "radius", "must be greater than 0 and at most 100"),
        ("blur", {"radius": 0.0}, "radius", "must be greater than 0 and at most 100"),
        ("blur", {"radius": -1.0}, "radius", "must be greater than 0 and at most 100"),
        ("blur", {}, "radius", "must be greater than 0 and at most 100"),
        ("blur", {"radius": "NaN"}, "radius", "must be a finite number"),
        ("blur", {"radius": math.nan}, "radius", "must be a finite number"),
        ("blur", {"radius": "Infinity"}, "radius", "must be a finite number"),
        ("blur", {"radius": math.inf}, "radius", "must be a finite number"),
        ("blur", {"radius": True}, "radius", "must be a number"),
        ("blur", {"radius": "2"}, "radius", "must be a number"),
        ("resize", {"width": 10001, "height": 5}, "width", "must be 1 to 10000"),
        ("resize", {"width": 5, "height": 0}, "height", "must be 1 to 10000"),
        ("resize", {"width": 5, "height": -3}, "height", "must be 1 to 10000"),
        ("resize", {"width": 5.0, "height": 5}, "width", "must be an integer"),
        ("resize", {"width": True, "height": 5}, "width", "must be an integer"),
        ("rotate", {"degrees": 360.0001}, "degrees", "must be -360 to 360"),
        ("rotate", {"degrees": -361}, "degrees", "must be -360 to 360"),
        ("rotate", {"degrees": "-Infinity"}, "degrees", "must be a finite number"),
        ("rotate", {"degrees": 5.0, "expand": 1}, "expand", "must be true or false"),
        ("flip", {"direction": "DIRECTION_UNSPECIFIED"}, "direction", "is required"),
        ("flip", {"direction": 0}, "direction", "is required"),
        ("flip", {}, "direction", "is required"),
        ("flip", {"direction": 7}, "direction", "has an unknown value 7"),
        ("flip", {"direction": "SIDEWAYS"}, "direction", "has an unknown value"),
        ("flip", {"direction": 1.0}, "direction", "must be DIRECTION_HORIZONTAL"),
        ("crop", {"left": -1, "top": 0, "right": 5, "bottom": 5}, "left", "must be 0 to"),
        ("crop", {"left": 5, "top": 0, "right": 5, "bottom": 5}, "right", "greater than left"),
        ("crop", {"left": 0, "top": 6, "right": 5, "bottom": 5}, "bottom", "greater than top"),
        ("brightness", {"factor": 10.01}, "factor", "must be 0 to 10"),
        ("brightness", {"factor": -0.01}, "factor", "must be 0 to 10"),
        ("contrast", {"factor": 10.01}, "factor", "must be 0 to 10"),
        ("contrast", {"factor": "NaN"}, "factor", "must be a finite number"),
        ("thumbnail", {"max_side": 0}, "max_side", "must be 1 to 10000"),
        ("thumbnail", {"max_side": 10001}, "max_side", "must be 1 to 10000"),
        ("grayscale", {"amount": 1}, "amount", "is not a parameter of grayscale"),
    ],
)
def test_values_past_the_edge_are_refused(
    name: str, params: dict[str, filters.ParamValue], bad: str, description: str
) -> None:
    violations = step_violations(FilterStep(name, params), 3)
    assert [v.field for v in violations] == [f"filters[3].{name}.{bad}"]
    assert description in violations[0].description


def test_every_bad_parameter_is_reported() -> None:
    step = FilterStep("resize", {"width": 0, "height": 10001})
    assert fields(step) == ["filters[3].resize.width", "filters[3].resize.height"]
    crop = FilterStep("crop", {"left": 4, "top": 4, "right": 4, "bottom": 1})
    assert fields(crop) == ["filters[3].crop.right", "filters[3].crop.bottom"]


def test_an_unknown_or_missing_filter() -> None:
    assert step_violations(FilterStep("sepia", {}), 2) == [
        FieldViolation("filters[2]", "has no filter 'sepia'")
    ]
    assert step_violations(FilterStep("", {}), 0) == [
        FieldViolation("filters[0]", "is required: set one filter")
    ]


def test_steps_built_from_filter_messages() -> None:
    nan = pb.Filter(blur=pb.Filter.Blur(radius=math.nan))
    assert fields(step_from(nan)) == ["filters[3].blur.radius"]
    unknown = pb.Filter(flip=pb.Filter.Flip(direction=7))  # type: ignore[arg-type]
    assert fields(step_from(unknown)) == ["filters[3].flip.direction"]
    crop = pb.Filter(crop=pb.Filter.Crop(right=3, bottom=2))
    assert step_from(crop) == FilterStep("crop", {"left": 0, "top": 0, "right": 3, "bottom": 2})
    assert fields(step_from(crop)) == []
    assert step_from(pb.Filter(grayscale=pb.Filter.Grayscale())) == FilterStep("grayscale", {})
    rotate = step_from(pb.Filter(rotate=pb.Filter.Rotate(degrees=45)))
    assert rotate.params == {"degrees": 45.0, "expand": False}
    assert fields(rotate) == []


def test_json_round_trip() -> None:
    steps = [FilterStep(name, params) for name, params in EXAMPLES.items()]
    stored = filters.steps_to_json(steps)
    assert stored[1] == {"blur": {"radius": 2.0}}
    assert stored[0] == {"grayscale": {}}
    assert filters.steps_from_json(stored) == steps
    bads: list[object] = [{}, {"a": {}, "b": {}}, {"blur": 2}, {3: {}}, "blur", None]
    for bad in bads:
        with pytest.raises(ValueError, match="name: params"):
            FilterStep.from_json(bad)
    with pytest.raises(ValueError, match="list"):
        filters.steps_from_json({"blur": {}})


# --- every filter on every mode -----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_every_filter_on_every_mode(name: str, mode: str) -> None:
    step = FilterStep(name, EXAMPLES[name])
    image = sample(mode)
    result = apply(step, image)
    assert result.size == output_size(step, image.size)
    expected_mode = {"RGB": "L", "RGBA": "LA"}.get(mode, mode) if name == "grayscale" else mode
    assert result.mode == expected_mode
    assert image.tobytes() == sample(mode).tobytes()  # the input is left alone


@pytest.mark.parametrize("name", ["sharpen", "brightness", "contrast", "invert", "edge_detect"])
@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_colour_filters_keep_the_alpha_band(name: str, mode: str) -> None:
    image = sample(mode)
    result = apply(FilterStep(name, EXAMPLES[name]), image)
    assert result.getchannel("A").tobytes() == image.getchannel("A").tobytes()
    assert result.convert(mode[:-1]).tobytes() != image.convert(mode[:-1]).tobytes()


def test_invert_and_flip_move_the_right_pixels() -> None:
    image = Image.new("RGBA", (3, 2), (10, 20, 30, 40))
    image.putpixel((0, 0), (200, 0, 0, 255))
    inverted = apply(FilterStep("invert", {}), image)
    assert inverted.getpixel((0, 0)) == (55, 255, 255, 255)
    assert inverted.getpixel((1, 1)) == (245, 235, 225, 40)
    horizontal = apply(FilterStep("flip", {"direction": "DIRECTION_HORIZONTAL"}), image)
    assert horizontal.getpixel((2, 0)) == (200, 0, 0, 255)
    vertical = apply(FilterStep("flip", {"direction": 2}), image)
    assert vertical.getpixel((0, 1)) == (200, 0, 0, 255)


def test_crop_keeps_the_box() -> None:
    image = sample("RGB", (30, 20))
    step = FilterStep("crop", {"left": 3, "top": 4, "right": 13, "bottom": 9})
    assert apply(step, image).tobytes() == image.crop((3, 4, 13, 9)).tobytes()


def test_brightness_and_contrast_at_their_ends() -> None:
    image = sample("RGB")
    black = apply(FilterStep("brightness", {"factor": 0.0}), image)
    assert black.getextrema() == ((0, 0), (0, 0), (0, 0))
    grey = apply(FilterStep("contrast", {"factor": 0.0}), image)
    extrema = cast(tuple[tuple[int, int], ...], grey.getextrema())
    assert all(low == high for low, high in extrema)
    same = apply(FilterStep("brightness", {"factor": 1.0}), image)
    assert ImageChops.difference(same, image).getbbox() is None


def test_blur_does_not_bleed_transparent_colour() -> None:
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    image.paste((255, 255, 255, 255), (5, 5, 15, 15))
    blurred = apply(FilterStep("blur", {"radius": 3.0}), image)
    r, _g, _b, a = cast(tuple[int, int, int, int], blurred.getpixel((4, 10)))
    assert 0 < a < 255
    assert r >= 250  # premultiplied: the edge stays white, it does not turn grey


def test_a_crop_outside_the_image_fails_the_step() -> None:
    step = FilterStep("crop", {"left": 0, "top": 0, "right": 900, "bottom": 10})
    with pytest.raises(FilterFailed) as caught:
        apply(step, Image.new("RGB", (640, 480)), index=2)
    assert caught.value.index == 2
    assert caught.value.message == (
        "filters[2].crop: the box (0, 0, 900, 10) lies outside the 640x480 image"
    )
    assert filters.fit_problem(step, (900, 10)) is None
    assert filters.fit_problem(step, (899, 10)) is not None
    assert filters.fit_problem(step, (900, 9)) is not None


# --- exact sizes --------------------------------------------------------------------------


def test_rotated_sizes_are_exact() -> None:
    rng = random.Random(6)
    angles = [0.0, 90.0, -90.0, 180.0, 270.0, 360.0, -360.0, 45.0, -45.0, 30.0, 0.5, 359.99]
    angles += [float(rng.randint(-360, 360)) for _ in range(30)]
    angles += [rng.uniform(-360, 360) for _ in range(40)]
    for degrees in angles:
        for _ in range(4):
            size = (rng.randint(1, 40), rng.randint(1, 40))
            image = Image.new("L", size)
            for expand in (True, False):
                step = FilterStep("rotate", {"degrees": degrees, "expand": expand})
                assert apply(step, image).size == output_size(step, size), (degrees, size)


def test_thumbnail_sizes_are_exact_and_never_upscale() -> None:
    rng = random.Random(12)
    for _ in range(300):
        size = (rng.randint(1, 300), rng.randint(1, 300))
        max_side = rng.randint(1, 320)
        step = FilterStep("thumbnail", {"max_side": max_side})
        expected = output_size(step, size)
        assert apply(step, Image.new("RGB", size)).size == expected
        assert max(expected) == min(max(size), max_side)
        assert expected[0] <= size[0]
        assert expected[1] <= size[1]
        assert min(expected) >= 1
    assert filters.thumbnail_size((1000, 1), 10) == (10, 1)
    assert filters.thumbnail_size((300, 200), 150) == (150, 100)
    assert filters.thumbnail_size((200, 300), 150) == (100, 150)
    assert filters.thumbnail_size((3, 2), 2) == (2, 1)  # 1.33 rounds to 1


def test_random_pipelines_keep_their_simulated_sizes() -> None:
    rng = random.Random(2024)

    def random_step(size: tuple[int, int]) -> FilterStep:
        name = rng.choice(["resize", "rotate", "crop", "thumbnail", "flip", "grayscale"])
        if name == "resize":
            return FilterStep(name, {"width": rng.randint(1, 60), "height": rng.randint(1, 60)})
        if name == "rotate":
            return FilterStep(name, {"degrees": rng.uniform(-360, 360), "expand": True})
        if name == "crop":
            left, top = rng.randrange(size[0]), rng.randrange(size[1])
            right, bottom = rng.randint(left + 1, size[0]), rng.randint(top + 1, size[1])
            return FilterStep(name, {"left": left, "top": top, "right": right, "bottom": bottom})
        if name == "thumbnail":
            return FilterStep(name, {"max_side": rng.randint(1, 50)})
        return FilterStep(name, EXAMPLES[name])

    for _ in range(40):
        image = sample(rng.choice(MODES), (rng.randint(1, 50), rng.randint(1, 50)))
        for _ in range(5):
            step = random_step(image.size)
            assert step_violations(step, 0) == []
            expected = output_size(step, image.size)
            image = apply(step, image)
            assert image.size == expected
