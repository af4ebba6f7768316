"""Small real images for tests (generated, no patient data)."""

from __future__ import annotations

import base64
import io

from PIL import Image, ImageDraw


def chest_like_png(size: int = 512, seed: int = 0) -> bytes:
    """A grey radiograph-like PNG: dark background, a bright ellipse, a few marks."""
    img = Image.new("L", (size, size), 20)
    d = ImageDraw.Draw(img)
    d.ellipse((size // 8, size // 10, size * 7 // 8, size * 9 // 10), fill=120 + seed % 60)
    d.rectangle((size // 2 - 4, size // 10, size // 2 + 4, size * 9 // 10), fill=200)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def data_url(png: bytes | None = None) -> str:
    return "data:image/png;base64," + base64.b64encode(png or chest_like_png()).decode()
