"""Synthetic image bytes for decoding and bad-input tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient_rgb(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.dstack([x, y, 255 - x]))


def huge_pixels_png(width: int = 4000, height: int = 3500) -> bytes:
    """A tiny file that decodes to width*height pixels (decompression-bomb shape)."""
    return encode(Image.new("L", (width, height)), "PNG", optimize=True)
