"""Any image input -> an OpenAI `image_url` content part with a data URL (pure).

Sources: a file path (PNG, JPEG, any format Pillow reads, or DICOM), an http(s) or data
URL (passed through unchanged: the server fetches it), raw bytes, a PIL image, a numpy
array, or a pydicom Dataset. Images larger than `max_size` (896 px, MedGemma's SigLIP
input) are downscaled here, keeping the aspect ratio, so the server never decodes a
4000 px upload. The encoding is chosen by content: PNG (lossless) for grey, paletted or
few-colour images, which is what radiographs are; JPEG for photographs. A PNG or JPEG
that needs no change is sent as its original bytes.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.dataset import Dataset

from clients import dicom
from clients.errors import ImageError

__all__ = ["ImageError", "load_image", "to_data_url", "to_image_part", "encode_image"]

DEFAULT_MAX_SIZE = 896  # MedGemma 4B / 27B image input: SigLIP at 896 x 896
JPEG_QUALITY = 90
PNG_COMPRESS_LEVEL = 1  # fast: the bytes only cross one network hop
PASS_THROUGH_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg"}
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
    mime, data = encode_source(source, max_size=max_size, frame=frame)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def encode_source(
    source: ImageSource, *, max_size: int | None, frame: int | None
) -> tuple[str, bytes]:
    """(mime type, encoded bytes) for a non-URL source."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        return encode_bytes(read_file(path), str(path), max_size=max_size, frame=frame)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return encode_bytes(bytes(source), "<bytes>", max_size=max_size, frame=frame)
    return encode_image(load_image(source, frame=frame), max_size=max_size)


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
    """Encode file contents; PNG/JPEG bytes that need no change are passed through."""
    if not dicom.is_dicom(data, where):
        img = open_image(data, where)
        if frame is None and img.format in PASS_THROUGH_FORMATS and needs_no_change(img, max_size):
            return PASS_THROUGH_FORMATS[img.format], data
        if img.format == "JPEG" and max_size is not None:
            img.draft(img.mode, (max_size, max_size))  # decode at 1/2, 1/4, 1/8 scale: fast
        return encode_image(normalise(img, frame, where), max_size=max_size)
    return encode_image(decode_bytes(data, where, frame), max_size=max_size)


def decode_bytes(data: bytes, where: str, frame: int | None) -> Image.Image:
    """Encoded image or DICOM bytes -> 8-bit 'L' or 'RGB' image. Raises ImageError."""
    if dicom.is_dicom(data, where):
        return dicom.dataset_to_image(dicom.read_dataset(data, where), frame, where)
    return normalise(open_image(data, where), frame, where)


def open_image(data: bytes, where: str) -> Image.Image:
    """Open encoded image bytes lazily, refusing decompression bombs. Raises ImageError."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{where}: image too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{where}: not an image (neither a format Pillow reads nor DICOM)"
        ) from exc
    except OSError as exc:
        raise ImageError(f"{where}: cannot read image ({exc})") from exc
    check_pixel_budget(img, where)
    return img


def check_pixel_budget(img: Image.Image, where: str) -> None:
    """Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) as a hard error."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and img.width * img.height > limit:
        raise ImageError(
            f"{where}: image too large to decode safely: {img.width}x{img.height} = "
            f"{img.width * img.height} pixels exceeds Pillow's limit of {limit} "
            f"(PIL.Image.MAX_IMAGE_PIXELS)"
        )


def needs_no_change(img: Image.Image, max_size: int | None) -> bool:
    """True if the encoded file can be sent as is: small enough, one frame, upright."""
    small = max_size is None or max(img.size) <= max_size
    # EXIF sits in the header of a JPEG (and before IDAT in a PNG): no pixel decoding here.
    upright = "exif" not in img.info or img.getexif().get(0x0112, 1) == 1
    return small and upright and getattr(img, "n_frames", 1) == 1 and img.mode in ("L", "RGB")


def load_image(source: ImageSource, *, frame: int | None = None) -> Image.Image:
    """Decode any non-URL source into an 8-bit 'L' or 'RGB' PIL image (full size)."""
    if isinstance(source, Dataset):
        return dicom.dataset_to_image(source, frame, "DICOM dataset")
    if isinstance(source, Image.Image):
        check_pixel_budget(source, "PIL image")
        return normalise(source, frame, "PIL image")
    if isinstance(source, np.ndarray):
        return array_to_image(source)
    if isinstance(source, (str, os.PathLike)) and str(source).startswith(URL_PREFIXES):
        raise ImageError(f"{source!s:.60}: a URL cannot be decoded locally; pass it to to_data_url")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_bytes(bytes(source), "<bytes>", frame)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        return decode_bytes(read_file(path), str(path), frame)
    raise ImageError(f"unsupported image source type {type(source).__name__}")


def normalise(img: Image.Image, frame: int | None, where: str) -> Image.Image:
    """Pick the frame, decode, apply EXIF orientation, convert to 8-bit 'L' or 'RGB'."""
    n = getattr(img, "n_frames", 1)
    if frame is None and n > 1:
        raise ImageError(
            f"{where}: image with {n} frames; choose one with frame=N (CLI: --frame N)"
        )
    try:
        if frame is not None:
            if not 0 <= frame < n:
                raise ImageError(f"{where}: frame {frame} out of range, the image has {n} frame(s)")
            img.seek(frame)
        img.load()
        img = ImageOps.exif_transpose(img) or img
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{where}: image too large to decode safely ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{where}: cannot decode image ({exc})") from exc
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return array_to_image(np.asarray(img))
    if img.mode in ("1", "LA", "La"):
        return img.convert("L")
    return img.convert("RGB")  # P, RGBA, CMYK, YCbCr, LAB, HSV: alpha dropped


def array_to_image(arr: np.ndarray) -> Image.Image:
    """A numpy array (H x W grey, H x W x 1/3/4) as an 8-bit PIL image; any dtype
    other than uint8 is mapped from its own min..max onto 0..255."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))) or a.size == 0:
        raise ImageError(f"numpy array of shape {a.shape}: expected H x W or H x W x 3/4")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        if a.dtype.kind not in "iuf":
            raise ImageError(f"numpy array of dtype {a.dtype}: expected numbers")
        finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        a = dicom.to_uint8(np.nan_to_num(a, nan=low), low, high)
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    return Image.fromarray(np.ascontiguousarray(a), "L" if a.ndim == 2 else "RGB")


def downscale(img: Image.Image, max_size: int | None) -> Image.Image:
    """The image with its longest side at most max_size, aspect ratio kept (pure)."""
    if max_size is None or max(img.size) <= max_size:
        return img
    scale = max_size / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    # Bilinear (antialiased in Pillow), as Gemma 3's own image processor resizes; the box
    # pre-reduction (reducing_gap) makes a 4096 px input cheap.
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def choose_format(img: Image.Image) -> str:
    """'PNG' for grey, paletted or few-colour images (lossless), 'JPEG' for photographs."""
    if img.mode != "RGB":
        return "PNG"
    return "PNG" if img.getcolors(maxcolors=256) is not None else "JPEG"


def is_grey_rgb(img: Image.Image) -> bool:
    """True for an RGB image whose three channels are equal (a grey scan saved as RGB)."""
    a = np.asarray(img)
    return bool(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]))


def encode_image(img: Image.Image, *, max_size: int | None = DEFAULT_MAX_SIZE) -> tuple[str, bytes]:
    """Downscale and encode an 8-bit image: (mime type, bytes)."""
    img = downscale(img, max_size)
    if img.mode == "RGB" and is_grey_rgb(img):
        img = img.convert("L")
    fmt = choose_format(img)
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        img.save(buf, "JPEG", quality=JPEG_QUALITY)
    return f"image/{fmt.lower()}", buf.getvalue()
