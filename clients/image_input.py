"""Any image input -> an OpenAI `image_url` content part with a data URL: the one place that
tells DICOM (clients.dicom: -> 8-bit arrays) from other images (clients.images: -> PNG/JPEG).

Sources: a file path (PNG, JPEG, any format Pillow reads, or DICOM), an http(s) or data
URL (passed through unchanged: the server fetches it), raw bytes, a PIL image, a numpy
array, or a pydicom Dataset. Downscaling, the choice of PNG or JPEG and the pass-through of
files that need no change are clients.images'.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from clients import dicom, images
from clients.errors import ImageError
from clients.images import DEFAULT_MAX_SIZE

URL_PREFIXES = ("http://", "https://", "data:")

ImageSource = str | os.PathLike[str] | bytes | Image.Image | np.ndarray | Dataset


def to_image_part(
    source: ImageSource, *, max_size: int | None = DEFAULT_MAX_SIZE, frame: int | None = None
) -> dict[str, Any]:
    """An OpenAI chat content part: {"type": "image_url", "image_url": {"url": ...}}."""
    return {
        "type": "image_url",
        "image_url": {"url": to_data_url(source, max_size=max_size, frame=frame)},
    }


def to_data_url(
    source: ImageSource, *, max_size: int | None = DEFAULT_MAX_SIZE, frame: int | None = None
) -> str:
    """A `data:image/...;base64,...` URL for the source (http/data URLs returned as is).

    max_size: longest side in pixels after downscaling (None keeps full resolution).
    frame: which frame of a multi-frame DICOM or image file (required when there are
    several). Raises ImageError for anything that is not a usable image.
    """
    if isinstance(source, str) and source.startswith(URL_PREFIXES):
        return source
    if max_size is not None and max_size < 1:
        raise ImageError(f"max_size must be a positive number of pixels or None, not {max_size}")
    return images.data_url(*encode_source(source, max_size=max_size, frame=frame))


def encode_source(
    source: ImageSource, *, max_size: int | None, frame: int | None
) -> tuple[str, bytes]:
    """(mime type, encoded bytes) for a non-URL source."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        return encode_bytes(read_file(path), str(path), max_size=max_size, frame=frame)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return encode_bytes(bytes(source), "<bytes>", max_size=max_size, frame=frame)
    return images.encode_image(load_image(source, frame=frame), max_size=max_size)


def read_file(path: Path) -> bytes:
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def encode_bytes(
    data: bytes, where: str, *, max_size: int | None, frame: int | None
) -> tuple[str, bytes]:
    """Encode file contents: DICOM through its pixels, any other image by clients.images."""
    if dicom.is_dicom(data, where):
        return images.encode_image(decode_bytes(data, where, frame), max_size=max_size)
    return images.encode_file(data, where, max_size=max_size, frame=frame)


def decode_bytes(data: bytes, where: str, frame: int | None) -> Image.Image:
    """Encoded image or DICOM bytes -> 8-bit 'L' or 'RGB' image. Raises ImageError."""
    if dicom.is_dicom(data, where):
        pixels = dicom.dataset_to_array(dicom.read_dataset(data, where), frame, where)
        return images.array_to_image(pixels)
    return images.decode_file(data, where, frame)


def load_image(source: ImageSource, *, frame: int | None = None) -> Image.Image:
    """Decode any non-URL source into an 8-bit 'L' or 'RGB' PIL image (full size)."""
    if isinstance(source, Dataset):
        return images.array_to_image(dicom.dataset_to_array(source, frame, "DICOM dataset"))
    if isinstance(source, Image.Image):
        images.check_pixel_budget(source, "PIL image")
        return images.normalise(source, frame, "PIL image")
    if isinstance(source, np.ndarray):
        return images.array_to_image(source)
    if isinstance(source, (str, os.PathLike)) and str(source).startswith(URL_PREFIXES):
        raise ImageError(f"{source!s:.60}: a URL cannot be decoded locally; pass it to to_data_url")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_bytes(bytes(source), "<bytes>", frame)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        return decode_bytes(read_file(path), str(path), frame)
    raise ImageError(f"unsupported image source type {type(source).__name__}")
