"""Probing untrusted bytes, decoding to the four working modes, encoding the result."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, ImageOps

from server.errors import InvalidArgument
from server.imaging import images
from server.imaging.errors import UnprocessableImage
from server.imaging.images import ImageInfo, decode, encode, probe

MAX_BYTES = MAX_PIXELS = 1_000_000


def gradient(mode: str = "RGB", size: tuple[int, int] = (40, 20)) -> Image.Image:
    base = Image.linear_gradient("L").resize(size)
    image = Image.merge("RGB", (base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), base))
    if mode.startswith("L"):
        image = image.convert("L")
    if mode.endswith("A"):
        image.putalpha(base.transpose(Image.Transpose.FLIP_TOP_BOTTOM))
    return image if mode in ("L", "LA", "RGB", "RGBA") else image.convert(mode)


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def probed(data: bytes) -> ImageInfo:
    return probe(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def violation(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> str:
    with pytest.raises(InvalidArgument) as caught:
        probe(data, max_bytes=max_bytes, max_pixels=max_pixels)
    [found] = caught.value.violations
    assert found.field == "image"
    return found.description


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares width x height grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


# --- probe --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_every_allowed_format_is_probed(fmt: str, content_type: str) -> None:
    data = saved(gradient(), fmt)
    assert probed(data) == ImageInfo(content_type, 40, 20, len(data), fmt)


def test_an_empty_image_is_required() -> None:
    assert violation(b"") == "is required"


def test_max_bytes_at_the_edge_and_past_it() -> None:
    data = saved(gradient(), "PNG")
    assert probe(data, max_bytes=len(data), max_pixels=800).size_bytes == len(data)
    description = violation(data, max_bytes=len(data) - 1)
    assert description == f"is {len(data)} bytes; the limit is {len(data) - 1} bytes"


def test_max_pixels_at_the_edge_and_past_it() -> None:
    data = saved(gradient(size=(40, 20)), "PNG")
    assert probe(data, max_bytes=10_000, max_pixels=800).size == (40, 20)
    description = violation(data, max_pixels=799)
    assert description == "declares 40x20 = 800 pixels; the limit is 799 (a decompression bomb?)"


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = png_header_only(5_000, 5_000)
    assert len(bomb) < 100
    assert violation(bomb) == (
        "declares 5000x5000 = 25000000 pixels; the limit is 1000000 (a decompression bomb?)"
    )
    # Past twice Image.MAX_IMAGE_PIXELS Pillow refuses it first, without the size.
    assert violation(png_header_only(20_000, 20_000)) == (
        "declares more than 1000000 pixels (a decompression bomb?)"
    )


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_pillows_own_bomb_checks_are_refused_too(side: int) -> None:
    # 10000² is past Image.MAX_IMAGE_PIXELS (a warning, an error here), 20000² past twice it.
    description = violation(png_header_only(side, side), max_pixels=2_000_000_000)
    assert "decompression bomb" in description


def test_a_large_solid_image_that_compresses_well() -> None:
    data = saved(Image.new("L", (3000, 3000)), "PNG")
    assert len(data) < 20_000
    assert "9000000 pixels" in violation(data)
    assert probe(data, max_bytes=20_000, max_pixels=9_000_000).size == (3000, 3000)


def png_with_text(text_bytes: int) -> bytes:
    """A 16x16 PNG whose zTXt chunks inflate to about ``text_bytes`` of text."""
    part = zlib.compress(b"a" * 1_000_000, 9)  # 1 KB that inflates to 1 MB
    chunks = b""
    for number in range(text_bytes // 1_000_000):
        chunks += png_chunk(b"zTXt", b"k%d\x00\x00" % number + part)
    plain = saved(Image.new("L", (16, 16)), "PNG")
    return plain[:33] + chunks + plain[33:]  # after IHDR


def test_png_header_text_at_the_limit_and_past_it() -> None:
    assert images.PNG_MAX_TEXT_BYTES == 4 * 1024 * 1024
    assert probed(png_with_text(4_000_000)).size == (16, 16)
    assert len(png_with_text(5_000_000)) < 10_000
    assert violation(png_with_text(5_000_000)) == "is not a readable image"


def test_a_truncated_image_passes_the_header_check_and_fails_to_decode() -> None:
    data = saved(gradient(size=(64, 64)), "PNG")
    jpeg = saved(gradient(size=(64, 64)), "JPEG")
    for cut in (data[: len(data) // 2], jpeg[:-200]):
        assert probed(cut).size == (64, 64)  # nothing decoded on the request path
        with pytest.raises(UnprocessableImage, match="truncated or corrupt"):
            decode(cut)
    assert violation(jpeg[:40]) == "is not a readable image"


def test_a_large_image_is_probed_without_decoding_it() -> None:
    # 6000x6000 RGB would be 108 MB decoded; its header says all probe needs.
    data = saved(Image.new("RGB", (6000, 6000)), "PNG")
    assert probe(data, max_bytes=len(data), max_pixels=40_000_000).size == (6000, 6000)
    with pytest.raises(UnprocessableImage, match="truncated or corrupt"):
        decode(data[: len(data) // 2])


def test_bytes_that_are_not_an_image() -> None:
    expected = "must be a PNG, JPEG, WebP, GIF, BMP or TIFF image"
    assert violation(b"hello, this is not an image") == expected
    assert violation(b"\x89PNG\r\n\x1a\n") == expected


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX"])
def test_formats_that_are_not_allowed_are_refused_by_name(fmt: str) -> None:
    data = saved(gradient(size=(16, 16)), fmt)
    assert violation(data) == f"must be a PNG, JPEG, WebP, GIF, BMP or TIFF image, not {fmt}"


def test_a_multi_picture_jpeg_is_read_as_its_first_picture() -> None:
    first, second = gradient(size=(40, 20)), Image.new("RGB", (8, 8), "red")
    data = saved(first, "MPO", save_all=True, append_images=[second])
    assert opened(data).format == "MPO"
    assert probed(data) == ImageInfo("image/jpeg", 40, 20, len(data), "MPO")
    assert decode(data).size == (40, 20)


_MODES_TO_TRY = ("RGB", "L", "1", "P", "RGBA", "F", "I;16")


def written(fmt: str) -> bytes | None:
    """A small image in ``fmt``, in the first mode Pillow's writer takes; None if none."""
    for mode in _MODES_TO_TRY:
        try:
            return saved(gradient(mode, size=(16, 16)), fmt)
        except Exception:  # noqa: S112 - that writer takes another mode, or none here
            continue
    return None


def read_as(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:
        return None


Image.init()
# Pillow registers these writers only to hand images to a handler an application
# installs (the scientific stubs) or to Windows (WMF): nothing here can write them.
STUB_WRITERS = {"BUFR", "GRIB", "HDF5", "WMF"}


@pytest.mark.parametrize("fmt", sorted(Image.SAVE))
@pytest.mark.filterwarnings("ignore:.*format is deprecated:DeprecationWarning")
def test_every_format_pillow_writes_is_accepted_or_refused_by_name(fmt: str) -> None:
    data = written(fmt)
    if data is None:
        assert fmt in STUB_WRITERS, f"Pillow's {fmt} writer wrote nothing in any mode"
        return
    name = read_as(data)
    try:
        info = probed(data)
    except InvalidArgument as exc:
        [found] = exc.violations
        assert found.field == "image"
        assert found.description.startswith("must be a PNG, JPEG, WebP, GIF, BMP or TIFF image")
        if name is not None:  # a format Pillow reads: named
            assert found.description.endswith(f", not {name}")
        return
    assert info.content_type in images.INPUT_FORMATS.values()
    assert decode(data).size == info.size


def test_exif_orientation_is_applied_and_reported() -> None:
    image = gradient(size=(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = saved(image, "JPEG", exif=exif, quality=95)
    info = probed(data)
    assert info.size == (20, 40)
    decoded = decode(data)
    assert decoded.size == (20, 40)
    expected = ImageOps.exif_transpose(opened(data))
    assert decoded.tobytes() == expected.tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_exif_transpose(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = saved(gradient("RGB", (30, 10)), "PNG", exif=exif)
    decoded = decode(data)
    assert decoded.size == probed(data).size
    assert decoded.tobytes() == ImageOps.exif_transpose(opened(data)).tobytes()


def test_an_animated_gif_is_read_as_its_first_frame() -> None:
    frames = [Image.new("RGB", (12, 8), colour) for colour in ("red", "blue", "green")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50)
    data = out.getvalue()
    assert probed(data).size == (12, 8)
    decoded = decode(data)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((5, 5)) == (255, 0, 0)


# --- decode -------------------------------------------------------------------------------


def test_modes_are_normalised() -> None:
    cases: list[tuple[Image.Image, str, str]] = [
        (gradient("L"), "PNG", "L"),
        (gradient("LA"), "PNG", "LA"),
        (gradient("RGB"), "PNG", "RGB"),
        (gradient("RGBA"), "PNG", "RGBA"),
        (gradient("1"), "PNG", "L"),
        (gradient("RGB").convert("P"), "PNG", "RGB"),
        (gradient("RGB").convert("CMYK"), "JPEG", "RGB"),
        (gradient("RGB").convert("CMYK"), "TIFF", "RGB"),
        (gradient("RGB").convert("YCbCr"), "TIFF", "RGB"),
        (gradient("L").convert("F"), "TIFF", "L"),
        (gradient("L").convert("I"), "TIFF", "L"),
    ]
    for image, fmt, mode in cases:
        data = saved(image, fmt)
        decoded = decode(data)
        assert (fmt, image.mode, decoded.mode) == (fmt, image.mode, mode)
        assert decoded.size == probed(data).size == image.size


def test_a_palette_with_transparency_keeps_it() -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putpixel((0, 0), 0)
    decoded = decode(saved(image, "PNG", transparency=0))
    assert decoded.mode == "RGBA"
    assert decoded.getpixel((0, 0)) == (0, 0, 0, 0)
    assert decoded.getpixel((1, 1)) == (255, 0, 0, 255)


def test_a_transparent_grey_becomes_an_alpha_band() -> None:
    image = Image.new("L", (4, 4), 7)
    image.putpixel((0, 0), 9)
    decoded = decode(saved(image, "PNG", transparency=9))
    assert decoded.mode == "LA"
    assert decoded.getpixel((0, 0)) == (9, 0)
    assert decoded.getpixel((1, 0)) == (7, 255)


def test_sixteen_bit_grey_is_scaled_onto_eight_bits() -> None:
    image = Image.new("I;16", (3, 1))
    for x, value in enumerate((0, 32_768, 65_535)):
        image.putpixel((x, 0), value)
    decoded = decode(saved(image, "PNG"))
    assert decoded.mode == "L"
    assert [decoded.getpixel((x, 0)) for x in range(3)] == [0, 128, 255]


def test_float_images_in_zero_to_one_are_scaled() -> None:
    image = Image.new("F", (2, 1))
    image.putpixel((1, 0), 1.0)
    decoded = decode(saved(image, "TIFF"))
    assert [decoded.getpixel((x, 0)) for x in range(2)] == [0, 255]


def test_integers_outside_sixteen_bits_are_stretched() -> None:
    image = Image.new("I", (3, 1))
    for x, value in enumerate((-100_000, 0, 100_000)):
        image.putpixel((x, 0), value)
    decoded = decode(saved(image, "TIFF"))
    assert [decoded.getpixel((x, 0)) for x in range(3)] == [0, 128, 255]


def test_decoding_bytes_that_are_not_an_image() -> None:
    with pytest.raises(UnprocessableImage, match="could not be decoded"):
        decode(b"nope")


# --- encode -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize(
    ("fmt", "content_type", "modes"),
    [
        ("png", "image/png", {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA"}),
        ("jpeg", "image/jpeg", {"L": "L", "LA": "L", "RGB": "RGB", "RGBA": "RGB"}),
        ("webp", "image/webp", {"L": "RGB", "LA": "RGBA", "RGB": "RGB", "RGBA": "RGBA"}),
    ],
)
def test_encode_to_every_format(
    mode: str, fmt: str, content_type: str, modes: dict[str, str]
) -> None:
    data, got_type = encode(gradient(mode, (33, 17)), fmt)
    assert got_type == content_type
    image = opened(data)
    assert (image.format, image.size, image.mode) == (fmt.upper(), (33, 17), modes[mode])


def test_jpeg_puts_transparency_on_white() -> None:
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 8, 16))
    decoded = opened(encode(image, "jpeg")[0])
    assert all(c >= 245 for c in decoded.getpixel((12, 8)))  # type: ignore[union-attr]
    assert decoded.getpixel((3, 8))[2] >= 245  # type: ignore[index]
    grey = opened(encode(Image.new("LA", (8, 8), (0, 0)), "jpeg")[0])
    assert grey.getpixel((4, 4)) >= 250  # type: ignore[operator]


def test_png_compress_level_is_an_option() -> None:
    image = gradient("RGB", (64, 64))
    fast, _ = encode(image, "png", compress_level=0)
    default, _ = encode(image, "png")
    assert len(fast) > len(default)
    assert opened(fast).tobytes() == opened(default).tobytes() == image.tobytes()


def test_unknown_output_formats_and_format_limits() -> None:
    with pytest.raises(ValueError, match="gif"):
        encode(gradient(), "gif")
    assert images.encode_problem((16_383, 1), "webp") is None
    assert images.encode_problem((1, 16_384), "webp") == (
        "WEBP images are at most 16383 pixels a side; the result would be 1x16384"
    )
    assert images.encode_problem((65_535, 2), "jpeg") is None
    assert images.encode_problem((65_536, 2), "jpeg") is not None
    assert images.encode_problem((100_000, 1), "png") is None
