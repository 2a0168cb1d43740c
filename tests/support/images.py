"""Small images made in memory, for tests that submit tasks."""

from __future__ import annotations

import io

from PIL import Image


def image_bytes(
    width: int = 48, height: int = 32, *, mode: str = "RGB", fmt: str = "PNG", seed: int = 0
) -> bytes:
    """An image with some structure (a gradient), so filters have something to do."""
    image = Image.linear_gradient("L").resize((width, height)).convert(mode)
    if seed:
        image.putpixel((0, 0), (seed % 256,) * len(mode) if len(mode) > 1 else seed % 256)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
