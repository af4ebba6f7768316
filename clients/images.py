"""Images -> encoded image bytes a chat request can carry (pure): PNG or JPEG, size-limited.

Inputs are 8-bit arrays (clients.dicom's output, or any numpy array), PIL images and the
bytes of an image file in a format Pillow reads (DICOM files are clients.dicom's; the choice
between the two is clients.image_input's). Images larger than `max_size` (896 px,
MedGemma's SigLIP input) are downscaled here, keeping the aspect ratio, so the server never
decodes a 4000 px upload. The encoding is chosen by content: PNG (lossless) for grey,
paletted or few-colour images, which is what radiographs are; JPEG for photographs. A PNG
or JPEG file that needs no change is sent as its original bytes.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clients.errors import ImageError
from clients.pixels import stretch

DEFAULT_MAX_SIZE = 896  # MedGemma 4B / 27B image input: SigLIP at 896 x 896
JPEG_QUALITY = 90
# Google's CT notebook saves each slice with Pillow's JPEG defaults: quality 75 (the
# quantisation table in its printed data URLs, /9j/4AAQ...2wBDAAgGBgcGBQgH..., is Pillow's
# at 75). The volume recipes (clients.recipes) encode so.
RECIPE_JPEG_QUALITY = 75
PNG_COMPRESS_LEVEL = 1  # fast: the bytes only cross one network hop
PASS_THROUGH_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg"}


def data_url(mime: str, data: bytes) -> str:
    """A `data:<mime>;base64,...` URL of encoded bytes."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def encode_file(
    data: bytes, where: str, *, max_size: int | None, frame: int | None
) -> tuple[str, bytes]:
    """Encode the contents of an image file (not DICOM); PNG/JPEG bytes that need no
    change are passed through. Raises ImageError."""
    img = open_image(data, where)
    if frame is None and img.format in PASS_THROUGH_FORMATS and needs_no_change(img, max_size):
        return PASS_THROUGH_FORMATS[img.format], data
    if img.format == "JPEG" and max_size is not None:
        img.draft(img.mode, (max_size, max_size))  # decode at 1/2, 1/4, 1/8 scale: fast
    return encode_image(normalise(img, frame, where), max_size=max_size)


def decode_file(data: bytes, where: str, frame: int | None) -> Image.Image:
    """The contents of an image file (not DICOM) -> 8-bit 'L' or 'RGB' image. Raises ImageError."""
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


def normalise(img: Image.Image, frame: int | None, where: str) -> Image.Image:
    """A PIL image as 8-bit 'L' or 'RGB': pick the frame, decode, apply EXIF orientation."""
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
        a = stretch(a)
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


def encode_jpeg(
    arr: np.ndarray, *, max_size: int | None = DEFAULT_MAX_SIZE, quality: int = RECIPE_JPEG_QUALITY
) -> tuple[str, bytes]:
    """An 8-bit H x W x 3 (or H x W, copied to R, G, B) array as JPEG, downscaled: the same
    pixels give the same bytes (Pillow's encoder is deterministic; no timestamp, no EXIF)."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    img = downscale(array_to_image(a), max_size)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return "image/jpeg", buf.getvalue()
