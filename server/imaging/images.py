"""Reading, checking and writing image bytes.

:func:`probe` checks untrusted bytes before a task is accepted, from the
header alone, so its cost is a few kilobytes read whatever the image declares:
the size in bytes, the format, the number of pixels the header declares (a
decompression bomb is refused before anything is decoded) and the colour
mode. The pixels are decoded only by the processor (:func:`decode`), which
fails the task, without a retry, when the file is truncated or corrupt.
:func:`decode` gives the image the filters work on: EXIF orientation applied
and the mode normalised to L, LA, RGB or RGBA. :func:`encode` writes the
result as PNG, JPEG or WebP.

Animated GIF and WebP images, multi-page TIFFs and multi-picture JPEGs (MPO,
what many cameras write) are read as their first frame. Any other format
Pillow can read is refused by name.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from server.errors import InvalidArgument
from server.imaging.errors import UnprocessableImage

Size = tuple[int, int]

# Pillow's readers that untrusted bytes are opened with (JPEG's also reads MPO).
READERS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
# The content type of each format those readers report.
INPUT_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # a JPEG with more pictures after the first
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
OUTPUT_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# The largest side each output format can hold.
OUTPUT_MAX_SIDE = {"png": 2**31 - 1, "jpeg": 65_535, "webp": 16_383}
MODES = ("L", "LA", "RGB", "RGBA")
# The text a PNG's header may carry, decompressed, before it is refused. Pillow
# allows 64 MiB (zTXt chunks inflate 1000-fold): from a 10 MiB upload, 64 MiB
# per check, on the request path. Real images carry kilobytes (XMP, comments).
PNG_MAX_TEXT_BYTES = 4 * 1024 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = PNG_MAX_TEXT_BYTES
JPEG_QUALITY = WEBP_QUALITY = 90
PNG_COMPRESS_LEVEL = 6

_ALLOWED = "a PNG, JPEG, WebP, GIF, BMP or TIFF image"
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """An accepted input image. ``width`` and ``height`` are after EXIF orientation."""

    content_type: str
    width: int
    height: int
    size_bytes: int
    format: str  # Pillow's name: "PNG", "JPEG", ...

    @property
    def size(self) -> Size:
        return self.width, self.height


def probe(data: bytes, *, max_bytes: int, max_pixels: int, field: str = "image") -> ImageInfo:
    """Check untrusted image bytes from their header; :class:`InvalidArgument` on ``field``
    when they fail.

    Nothing is decoded: a file that is cut short or corrupt after its header
    passes, and fails its task when the processor decodes it.

    Pillow's own decompression-bomb check (``Image.MAX_IMAGE_PIXELS``) runs when
    the header is read; its error, and its warning when warnings are errors, are
    refused like ours. Keep ``max_pixels`` at most ``Image.MAX_IMAGE_PIXELS``
    (89,478,485 by default), or Pillow warns about images this function accepts.
    """
    if not data:
        raise InvalidArgument.field(field, "is required")
    if len(data) > max_bytes:
        raise InvalidArgument.field(field, f"is {len(data)} bytes; the limit is {max_bytes} bytes")
    image = _open(data, field, max_pixels)
    try:
        content_type = INPUT_FORMATS.get(image.format or "")
        if content_type is None:
            raise InvalidArgument.field(field, f"must be {_ALLOWED}, not {image.format}")
        _check_pixels(image.size, max_pixels, field)
        if image.mode not in _NORMALISE:
            raise InvalidArgument.field(field, f"has an unsupported colour mode {image.mode}")
        width, height = oriented_size(image)
    finally:
        image.close()
    return ImageInfo(content_type, width, height, len(data), image.format or "")


def decode(data: bytes) -> Image.Image:
    """The image filters work on: first frame, EXIF orientation applied, mode L, LA, RGB or RGBA.

    Meant for bytes :func:`probe` accepted; raises :class:`UnprocessableImage` otherwise.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=READERS)
        turn = orientation(image)  # from the header, as probe read it
        image.load()
    except Exception as exc:
        raise UnprocessableImage(
            f"the input image could not be decoded (the file is truncated or corrupt): {exc}"
        ) from None
    normalise = _NORMALISE.get(image.mode)
    if normalise is None:
        raise UnprocessableImage(f"the input image has an unsupported colour mode {image.mode}")
    method = _TRANSPOSE.get(turn)
    oriented = image if method is None else image.transpose(method)
    return normalise(oriented)


def encode(
    image: Image.Image, output_format: str, *, compress_level: int = PNG_COMPRESS_LEVEL
) -> tuple[bytes, str]:
    """``(bytes, content type)`` of ``image`` as ``"png"``, ``"jpeg"`` or ``"webp"``.

    JPEG has no alpha: a transparent image is flattened onto white.
    """
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, "PNG", compress_level=compress_level)
    elif output_format == "jpeg":
        _flattened(image).save(buffer, "JPEG", quality=JPEG_QUALITY)
    elif output_format == "webp":
        rgb = image.convert("RGBA" if image.mode in ("LA", "RGBA") else "RGB")
        rgb.save(buffer, "WEBP", quality=WEBP_QUALITY)
    else:
        raise ValueError(f"unknown output format {output_format!r}")
    return buffer.getvalue(), OUTPUT_FORMATS[output_format]


def encode_problem(size: Size, output_format: str) -> str | None:
    """Why an image of ``size`` cannot be written as ``output_format``, or None."""
    limit = OUTPUT_MAX_SIDE[output_format]
    if max(size) <= limit:
        return None
    return (
        f"{output_format.upper()} images are at most {limit} pixels a side; "
        f"the result would be {size[0]}x{size[1]}"
    )


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) the header gives; 1 when there is none or it cannot be read.

    Read without decoding: Pillow's PNG reader would decode the whole image to
    look for an eXIf chunk after the pixels. Such a late chunk is ignored, here
    and by :func:`decode` alike, so the size checked is the size processed.
    """
    try:
        value = Image.Image.getexif(image).get(_ORIENTATION_TAG, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def oriented_size(image: Image.Image) -> Size:
    """The size of ``image`` once its EXIF orientation is applied (as :func:`decode` does)."""
    width, height = image.size
    return (height, width) if orientation(image) in (5, 6, 7, 8) else (width, height)


# --- probing ------------------------------------------------------------------------------


def _bomb(field: str, max_pixels: int) -> InvalidArgument:
    return InvalidArgument.field(
        field, f"declares more than {max_pixels} pixels (a decompression bomb?)"
    )


def _open(data: bytes, field: str, max_pixels: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=READERS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bomb(field, max_pixels) from None
    except UnidentifiedImageError:
        other = _format_of(data)
        refusal = f"must be {_ALLOWED}" + ("" if other is None else f", not {other}")
        raise InvalidArgument.field(field, refusal) from None
    except Exception:
        raise InvalidArgument.field(field, "is not a readable image") from None


def _format_of(data: bytes) -> str | None:
    """The format any of Pillow's readers takes ``data`` for, from its header; None if none."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # its header is not one of theirs either (or a bomb)
        return None


def _check_pixels(size: Size, max_pixels: int, field: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InvalidArgument.field(field, f"declares an empty {width}x{height} image")
    if width * height > max_pixels:
        raise InvalidArgument.field(
            field,
            f"declares {width}x{height} = {width * height} pixels; the limit is "
            f"{max_pixels} (a decompression bomb?)",
        )


# --- modes --------------------------------------------------------------------------------


def _keep(image: Image.Image) -> Image.Image:
    # A transparent colour (PNG tRNS) becomes an alpha band.
    if image.mode in ("L", "RGB") and image.has_transparency_data:
        return image.convert(image.mode + "A")
    return image


def _palette(image: Image.Image) -> Image.Image:
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


def _converter(mode: str) -> Callable[[Image.Image], Image.Image]:
    return lambda image: image.convert(mode)


def _numeric(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer and float images, scaled linearly onto L's 0-255."""
    floats = image if image.mode == "F" else image.convert("F")
    low, high = cast(tuple[float, float], floats.getextrema())
    bottom, top = _nominal_range(image.mode, low, high)
    scale = 255.0 / (top - bottom) if top > bottom else 0.0
    offset = 0.5 - bottom * scale  # F -> L truncates; + 0.5 rounds
    return floats.point(lambda x: x * scale + offset).convert("L")


def _nominal_range(mode: str, low: float, high: float) -> tuple[float, float]:
    """The range the values are meant in: the type's, if they fit one, else their own."""
    candidates = {"I": ((0, 255), (0, 65_535)), "F": ((0, 1), (0, 255))}.get(mode)
    if candidates is None:  # I;16 and its variants
        return 0.0, 65_535.0
    for bottom, top in candidates:
        if bottom <= low and high <= top:
            return float(bottom), float(top)
    return low, high


_NORMALISE: dict[str, Callable[[Image.Image], Image.Image]] = {
    "L": _keep,
    "LA": _keep,
    "RGB": _keep,
    "RGBA": _keep,
    "1": _converter("L"),
    "P": _palette,
    "PA": _converter("RGBA"),
    "La": _converter("LA"),
    "RGBa": _converter("RGBA"),
    "RGBX": _converter("RGB"),
    "CMYK": _converter("RGB"),
    "YCbCr": _converter("RGB"),
    "LAB": _converter("RGB"),
    "HSV": _converter("RGB"),
    "I": _numeric,
    "I;16": _numeric,
    "I;16L": _numeric,
    "I;16B": _numeric,
    "I;16N": _numeric,
    "F": _numeric,
}


def _flattened(image: Image.Image) -> Image.Image:
    """Without alpha, on white."""
    if image.mode not in ("LA", "RGBA"):
        return image
    base = image.mode[:-1]
    background = Image.new(base, image.size, "white")
    background.paste(image.convert(base), mask=image.getchannel("A"))
    return background
