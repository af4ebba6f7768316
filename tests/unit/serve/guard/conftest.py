"""The guard's unit tests build RequestGuard in this process; its constructor turns PIL's
own pixel limit off (`Image.MAX_IMAGE_PIXELS = None`, meant for vLLM's API server only).
Put it back after each test, so the client tests that run later in this process see
Pillow's limit as a user's process does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def pillow_pixel_limit() -> Iterator[None]:
    limit = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = limit
