"""The filter catalogue: the one place where the filters are defined.

A pipeline step is a :class:`FilterStep`: the name of the field set in the
``Filter`` oneof and that filter message's fields, as
``json_format.MessageToDict(..., preserving_proto_field_name=True,
always_print_fields_with_no_presence=True)`` gives them. So a double may be a
``float``, an ``int`` or one of the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"``; an enum is its value's name, or an ``int`` when the value is
unknown. A missing parameter has its proto3 default (0, false, the zero enum
value).

For every filter the catalogue knows its description and parameters (what
ListFilters shows), how to check a step (:func:`step_violations`), the size
of its output (:func:`output_size`, exactly what :func:`apply` produces, so a
pipeline's sizes can be checked before it runs), and how to apply it. Every
filter works on the four modes :func:`server.imaging.images.decode` produces:
L, LA, RGB and RGBA; colour filters leave the alpha band as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from server.errors import FieldViolation
from server.imaging.errors import FilterFailed
from server.request_rules import FieldRule, declared, expect_declared, field_rule
from taskgate.v1 import task_service_pb2

ParamValue = float | int | bool | str
Params = Mapping[str, ParamValue]
Size = tuple[int, int]

INT32_MAX = 2**31 - 1
DIRECTIONS = ("DIRECTION_UNSPECIFIED", "DIRECTION_HORIZONTAL", "DIRECTION_VERTICAL")

_NON_FINITE = {"NaN", "Infinity", "-Infinity"}


@dataclass(frozen=True, slots=True)
class FilterStep:
    """One step of a pipeline: ``FilterStep("blur", {"radius": 2.0})``."""

    name: str
    params: Params = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, ParamValue]]:
        """``{name: params}``, one element of the ``filters`` jsonb list."""
        return {self.name: dict(self.params)}

    @classmethod
    def from_json(cls, obj: Any) -> FilterStep:
        """The inverse of :meth:`to_json`; ``ValueError`` for anything else."""
        if not isinstance(obj, Mapping) or len(obj) != 1:
            raise ValueError(f"a filter step must be {{name: params}}, not {obj!r}")
        ((name, params),) = obj.items()
        if not isinstance(name, str) or not isinstance(params, Mapping):
            raise ValueError(f"a filter step must be {{name: params}}, not {obj!r}")
        return cls(name, dict(params))


def steps_to_json(steps: Sequence[FilterStep]) -> list[dict[str, dict[str, ParamValue]]]:
    return [step.to_json() for step in steps]


def steps_from_json(obj: Any) -> list[FilterStep]:
    if not isinstance(obj, list):
        raise ValueError(f"a pipeline must be a list of steps, not {obj!r}")
    return [FilterStep.from_json(item) for item in obj]


# --- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parameter:
    """A filter's parameter as ListFilters shows it, with its rule."""

    name: str
    type: str  # "double", "int32", "bool" or "enum"
    description: str
    default: ParamValue
    check: Callable[[ParamValue], str | None]  # why the value is bad, or None


def _as_float(value: ParamValue) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if value in _NON_FINITE:
        return float(value)
    return None


def _double(
    low: float, high: float, *, above_low: bool = False
) -> Callable[[ParamValue], str | None]:
    expected = (
        f"must be greater than {low:g} and at most {high:g}"
        if above_low
        else f"must be {low:g} to {high:g}"
    )

    def check(value: ParamValue) -> str | None:
        number = _as_float(value)
        if number is None:
            return "must be a number"
        if not math.isfinite(number):
            return "must be a finite number"
        too_low = number <= low if above_low else number < low
        return expected if too_low or number > high else None

    return check


def _int32(low: int, high: int) -> Callable[[ParamValue], str | None]:
    def check(value: ParamValue) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        return None if low <= value <= high else f"must be {low} to {high}"

    return check


def _declared(message: str, field: str) -> FieldRule:
    """The rules declared on a filter message's field (``proto/taskgate/v1/task_service.proto``)."""
    return field_rule(getattr(task_service_pb2.Filter, message), field)


def _double_rule(rule: FieldRule) -> Callable[[ParamValue], str | None]:
    high = declared(rule.maximum, "a double parameter's maximum")
    if rule.exclusive_minimum is not None:
        return _double(rule.exclusive_minimum, high, above_low=True)
    return _double(declared(rule.minimum, "a double parameter's minimum"), high)


def _int32_rule(rule: FieldRule) -> Callable[[ParamValue], str | None]:
    high = INT32_MAX if rule.maximum is None else int(rule.maximum)
    return _int32(int(declared(rule.minimum, "an int32 parameter's minimum")), high)


def _boolean(value: ParamValue) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _direction(value: ParamValue) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return "must be DIRECTION_HORIZONTAL or DIRECTION_VERTICAL"
    if value in DIRECTIONS[1:] or value in (1, 2):
        return None
    if value in (DIRECTIONS[0], 0):
        return "is required: DIRECTION_HORIZONTAL or DIRECTION_VERTICAL"
    return f"has an unknown value {value!r}: use DIRECTION_HORIZONTAL or DIRECTION_VERTICAL"


def _num(params: Params, name: str) -> float:
    return float(params.get(name, 0.0))


def _int(params: Params, name: str) -> int:
    return int(params.get(name, 0))


def _flag(params: Params, name: str) -> bool:
    return params.get(name, False) is True


def _direction_name(params: Params) -> str:
    value = params.get("direction", 0)
    return DIRECTIONS[value] if isinstance(value, int) else str(value)


# --- sizes --------------------------------------------------------------------------------


def _same(params: Params, size: Size) -> Size:
    return size


def _resized(params: Params, size: Size) -> Size:
    return _int(params, "width"), _int(params, "height")


def _cropped(params: Params, size: Size) -> Size:
    return _int(params, "right") - _int(params, "left"), _int(params, "bottom") - _int(
        params, "top"
    )


def _rotated(params: Params, size: Size) -> Size:
    return rotated_size(size, _num(params, "degrees"), expand=_flag(params, "expand"))


def _thumbnailed(params: Params, size: Size) -> Size:
    return thumbnail_size(size, _int(params, "max_side"))


def rotated_size(size: Size, degrees: float, *, expand: bool) -> Size:
    """The size of ``Image.rotate(degrees, expand=expand)``, computed as Pillow computes it."""
    w, h = size
    angle = degrees % 360.0
    if not expand or angle in (0, 180):
        return size
    if angle in (90, 270):
        return h, w
    # The same floating-point steps as Image.rotate, so the ceil/floor agree exactly.
    radians = -math.radians(angle)
    a, b = round(math.cos(radians), 15), round(math.sin(radians), 15)
    d, e = round(-math.sin(radians), 15), round(math.cos(radians), 15)
    cx, cy = w / 2, h / 2
    c = a * -cx + b * -cy + 0.0 + cx
    f = d * -cx + e * -cy + 0.0 + cy
    corners = ((0, 0), (w, 0), (w, h), (0, h))
    xs = [a * x + b * y + c for x, y in corners]
    ys = [d * x + e * y + f for x, y in corners]
    return (
        math.ceil(max(xs)) - math.floor(min(xs)),
        math.ceil(max(ys)) - math.floor(min(ys)),
    )


def thumbnail_size(size: Size, max_side: int) -> Size:
    """The longer side becomes ``max_side`` (never larger); the other keeps the ratio, rounded."""
    w, h = size
    if max(w, h) <= max_side:
        return size
    if w >= h:
        return max_side, max(1, _round_div(h * max_side, w))
    return max(1, _round_div(w * max_side, h)), max_side


def _round_div(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


# --- filters ------------------------------------------------------------------------------


def _colour_only(image: Image.Image, change: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """Apply ``change`` to the colour bands (L or RGB) and keep the alpha band as it is."""
    if image.mode not in ("LA", "RGBA"):
        return change(image)
    alpha = image.getchannel("A")
    result = change(image.convert(image.mode[:-1]))
    result.putalpha(alpha)
    return result


def _grayscale(image: Image.Image, params: Params) -> Image.Image:
    return image.convert("LA" if image.mode in ("LA", "RGBA") else "L")


def _blur(image: Image.Image, params: Params) -> Image.Image:
    # Blur premultiplied colour, so transparent pixels do not bleed their (black) colour.
    blur = ImageFilter.GaussianBlur(_num(params, "radius"))
    premultiplied = {"LA": "La", "RGBA": "RGBa"}.get(image.mode)
    if premultiplied is None:
        return image.filter(blur)
    return image.convert(premultiplied).filter(blur).convert(image.mode)


def _sharpen(image: Image.Image, params: Params) -> Image.Image:
    return _colour_only(image, lambda im: im.filter(ImageFilter.SHARPEN))


def _resize(image: Image.Image, params: Params) -> Image.Image:
    return image.resize(_resized(params, image.size), Image.Resampling.LANCZOS)


def _rotate(image: Image.Image, params: Params) -> Image.Image:
    return image.rotate(
        _num(params, "degrees"), Image.Resampling.BICUBIC, expand=_flag(params, "expand")
    )


def _flip(image: Image.Image, params: Params) -> Image.Image:
    if _direction_name(params) == "DIRECTION_HORIZONTAL":
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


def _crop(image: Image.Image, params: Params) -> Image.Image:
    return image.crop(_crop_box(params))


def _crop_box(params: Params) -> tuple[int, int, int, int]:
    return _int(params, "left"), _int(params, "top"), _int(params, "right"), _int(params, "bottom")


def _brightness(image: Image.Image, params: Params) -> Image.Image:
    factor = _num(params, "factor")
    return _colour_only(image, lambda im: ImageEnhance.Brightness(im).enhance(factor))


def _contrast(image: Image.Image, params: Params) -> Image.Image:
    factor = _num(params, "factor")
    return _colour_only(image, lambda im: ImageEnhance.Contrast(im).enhance(factor))


def _invert(image: Image.Image, params: Params) -> Image.Image:
    return _colour_only(image, ImageOps.invert)


def _edge_detect(image: Image.Image, params: Params) -> Image.Image:
    return _colour_only(image, lambda im: im.filter(ImageFilter.FIND_EDGES))


def _thumbnail(image: Image.Image, params: Params) -> Image.Image:
    size = _thumbnailed(params, image.size)
    if size == image.size:
        return image.copy()
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


# --- rules across parameters --------------------------------------------------------------


def _no_rules(params: Params) -> list[tuple[str, str]]:
    return []


def _crop_rules(params: Params) -> list[tuple[str, str]]:
    left, top, right, bottom = _crop_box(params)
    problems = []
    if right <= left:
        problems.append(("right", f"must be greater than left ({left})"))
    if bottom <= top:
        problems.append(("bottom", f"must be greater than top ({top})"))
    return problems


def _fits_anywhere(params: Params, size: Size) -> str | None:
    return None


def _crop_fits(params: Params, size: Size) -> str | None:
    box = _crop_box(params)
    w, h = size
    if box[2] <= w and box[3] <= h:
        return None
    return f"the box {box} lies outside the {w}x{h} image"


# --- the catalogue ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """Everything about one filter. ``parameters`` are in the order of the message's fields."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    run: Callable[[Image.Image, Params], Image.Image]
    size: Callable[[Params, Size], Size] = _same
    rules: Callable[[Params], list[tuple[str, str]]] = _no_rules
    fits: Callable[[Params, Size], str | None] = _fits_anywhere


def _side(message: str, name: str, what: str) -> Parameter:
    rule = _declared(message, name)
    span = f"{rule.minimum:g}-{rule.maximum:g}"
    return Parameter(name, "int32", f"{what}, {span}.", 0, _int32_rule(rule))


def _factor(message: str, effect: str) -> Parameter:
    rule = _declared(message, "factor")
    description = f"{effect}; {rule.minimum:g}-{rule.maximum:g}."
    return Parameter("factor", "double", description, 0.0, _double_rule(rule))


def _edge(name: str, description: str) -> Parameter:
    return Parameter(name, "int32", description, 0, _int32_rule(_declared("Crop", name)))


_RADIUS = _declared("Blur", "radius")
_BLUR_RADIUS = Parameter(
    "radius",
    "double",
    f"The blur radius in pixels, greater than {_RADIUS.exclusive_minimum:g} "
    f"and at most {_RADIUS.maximum:g}.",
    0.0,
    _double_rule(_RADIUS),
)
_DEGREES = _declared("Rotate", "degrees")
_ROTATE_PARAMETERS = (
    Parameter(
        "degrees",
        "double",
        f"The angle in degrees, counter-clockwise, {_DEGREES.minimum:g} to {_DEGREES.maximum:g}.",
        0.0,
        _double_rule(_DEGREES),
    ),
    Parameter(
        "expand",
        "bool",
        "Grow the canvas to hold the whole rotated image instead of clipping it.",
        False,
        _boolean,
    ),
)
expect_declared(_declared("Flip", "direction").enum_defined_only, "Flip.direction's rule")
_FLIP_DIRECTION = Parameter(
    "direction",
    "enum",
    "The axis to mirror along: DIRECTION_HORIZONTAL (left becomes right) or "
    "DIRECTION_VERTICAL (top becomes bottom).",
    DIRECTIONS[0],
    _direction,
)
_CROP_PARAMETERS = (
    _edge("left", "The left edge in pixels from the left, 0 or more."),
    _edge("top", "The top edge in pixels from the top, 0 or more."),
    _edge("right", "The right edge (exclusive), greater than left."),
    _edge("bottom", "The bottom edge (exclusive), greater than top."),
)

CATALOGUE: tuple[FilterSpec, ...] = (
    FilterSpec("grayscale", "Converts the image to shades of grey.", (), _grayscale),
    FilterSpec("blur", "Gaussian blur.", (_BLUR_RADIUS,), _blur),
    FilterSpec("sharpen", "Sharpens edges.", (), _sharpen),
    FilterSpec(
        "resize",
        "Resizes to exactly width x height pixels.",
        (
            _side("Resize", "width", "The new width in pixels"),
            _side("Resize", "height", "The new height in pixels"),
        ),
        _resize,
        size=_resized,
    ),
    FilterSpec("rotate", "Rotates counter-clockwise.", _ROTATE_PARAMETERS, _rotate, size=_rotated),
    FilterSpec("flip", "Mirrors the image.", (_FLIP_DIRECTION,), _flip),
    FilterSpec(
        "crop",
        "Keeps the box [left, right) x [top, bottom), in pixels from the top-left corner; "
        "the box must lie inside the image when the filter runs.",
        _CROP_PARAMETERS,
        _crop,
        size=_cropped,
        rules=_crop_rules,
        fits=_crop_fits,
    ),
    FilterSpec(
        "brightness",
        "Changes brightness.",
        (
            _factor(
                "Brightness", "1.0 keeps the image, 0.0 makes it black, 2.0 doubles the brightness"
            ),
        ),
        _brightness,
    ),
    FilterSpec(
        "contrast",
        "Changes contrast.",
        (_factor("Contrast", "1.0 keeps the image, 0.0 makes it solid grey"),),
        _contrast,
    ),
    FilterSpec("invert", "Inverts the colours (not the transparency).", (), _invert),
    FilterSpec("edge_detect", "Finds edges.", (), _edge_detect),
    FilterSpec(
        "thumbnail",
        "Shrinks the image, keeping its aspect ratio, so that its longer side is at most "
        "max_side pixels. A smaller image is left as it is.",
        (_side("Thumbnail", "max_side", "The longest side allowed in pixels"),),
        _thumbnail,
        size=_thumbnailed,
    ),
)
FILTERS: Mapping[str, FilterSpec] = {spec.name: spec for spec in CATALOGUE}


# --- the public operations ----------------------------------------------------------------


def step_violations(step: FilterStep, index: int) -> list[FieldViolation]:
    """What is wrong with pipeline step ``index``: one violation per bad parameter."""
    spec = FILTERS.get(step.name)
    if spec is None:
        what = "is required: set one filter" if not step.name else f"has no filter {step.name!r}"
        return [FieldViolation(f"filters[{index}]", what)]
    prefix = f"filters[{index}].{step.name}"
    violations = [
        FieldViolation(f"{prefix}.{name}", f"is not a parameter of {step.name}")
        for name in step.params
        if name not in {p.name for p in spec.parameters}
    ]
    for parameter in spec.parameters:
        problem = parameter.check(step.params.get(parameter.name, parameter.default))
        if problem is not None:
            violations.append(FieldViolation(f"{prefix}.{parameter.name}", problem))
    if not violations:
        violations = [FieldViolation(f"{prefix}.{n}", d) for n, d in spec.rules(step.params)]
    return violations


def fit_problem(step: FilterStep, size: Size) -> str | None:
    """Why a valid step cannot run on an image of ``size`` (a crop outside it), or None."""
    return FILTERS[step.name].fits(step.params, size)


def output_size(step: FilterStep, size: Size) -> Size:
    """The exact size :func:`apply` gives a valid step on an image of ``size``."""
    return FILTERS[step.name].size(step.params, size)


def apply(step: FilterStep, image: Image.Image, *, index: int = 0) -> Image.Image:
    """Apply a valid step (see :func:`step_violations`) to an L, LA, RGB or RGBA image.

    Raises :class:`FilterFailed` when the step does not fit the image (a crop outside it).
    """
    spec = FILTERS[step.name]
    problem = spec.fits(step.params, image.size)
    if problem is not None:
        raise FilterFailed(index, f"filters[{index}].{step.name}: {problem}")
    return spec.run(image, step.params)
