"""DICOM files and datasets -> 8-bit numpy arrays a vision-language model can read (pure).

pydicom does the medical part: decoding (with whatever pixel-data plugins are
installed: pylibjpeg for JPEG / JPEG-LS / JPEG 2000, RLE and deflate built in), the
modality LUT (rescale slope/intercept) and the VOI LUT or window centre/width. This
module only chooses the frame, maps the result onto 0..255 and inverts MONOCHROME1 so
that bone is bright, as on a radiograph viewer. It yields arrays (H x W grey, H x W x 3
RGB, uint8); encoding them (clients.images) is not its business.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from clients.errors import ImageError
from clients.pixels import finite_range, to_uint8

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(head: bytes, name: str = "") -> bool:
    """True if `head` (a file's first 132 bytes, or more) starts like a DICOM Part 10 file
    (a 128-byte preamble, then `DICM`), or `name` ends in .dcm / .dicom (DICOM written
    without the preamble)."""
    has_magic = len(head) >= 132 and head[128:132] == b"DICM"
    return has_magic or name.lower().endswith(DICOM_SUFFIXES)


def is_dicom_file(path: Path) -> bool:
    """`is_dicom` for a file on disk, reading only its first 132 bytes (False if unreadable)."""
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return is_dicom(head, path.name)


def read_dataset(data: bytes, where: str = "<bytes>") -> Dataset:
    """Parse DICOM file contents. Raises ImageError if they are not DICOM."""
    try:
        return pydicom.dcmread(io.BytesIO(data), force=not is_dicom(data))
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise ImageError(f"{where}: not a readable DICOM file ({exc})") from exc


def frame_count(ds: Dataset) -> int:
    """Number of frames in the pixel data (1 when NumberOfFrames is absent or invalid)."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def transfer_syntax_name(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return f"{uid.name} ({uid})" if uid else "unknown transfer syntax"


def decode_frame(ds: Dataset, frame: int | None, where: str = "DICOM") -> np.ndarray:
    """The raw stored values of one frame (RGB for colour data). Raises ImageError."""
    if not any(k in ds for k in PIXEL_KEYWORDS):
        sop = ds.get("SOPClassUID")
        kind = f" ({sop.name})" if sop is not None else ""
        raise ImageError(f"{where}: this DICOM has no pixel data{kind}; it is not an image")
    n = frame_count(ds)
    if frame is None and n > 1:
        raise ImageError(
            f"{where}: multi-frame DICOM with {n} frames; choose one with frame=N "
            f"(CLI: --frame N), 0 <= N < {n}"
        )
    if frame is not None and not 0 <= frame < n:
        raise ImageError(f"{where}: frame {frame} out of range, the file has {n} frame(s)")
    try:
        return pixel_array(ds, index=frame if n > 1 else None)
    except (NotImplementedError, RuntimeError) as exc:
        raise ImageError(
            f"{where}: cannot decode pixel data in {transfer_syntax_name(ds)}: no installed "
            f"decoder handles it (pydicom says: {str(exc).splitlines()[0][:200]}). Install a "
            f"pydicom pixel-data plugin for it (e.g. pylibjpeg-libjpeg, pylibjpeg-openjpeg, "
            f"python-gdcm) or convert the file"
        ) from exc
    except (ValueError, AttributeError, KeyError) as exc:
        raise ImageError(f"{where}: invalid pixel data ({exc})") from exc


def grey_to_uint8(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT, then VOI LUT / window if the file has one, else the frame's own range."""
    values = apply_modality_lut(stored, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        windowed = apply_voi_lut(values, ds)
        # pydicom clips to the output range of the LUT or window; probing with extreme
        # inputs gives exactly that range, so the display mapping is pydicom's own.
        probe = apply_voi_lut(np.array([-1e12, 1e12]), ds)
        low, high = float(np.min(probe)), float(np.max(probe))
        out = to_uint8(windowed, low, high)
    else:
        out = to_uint8(values, *finite_range(values))
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1: the lowest value is white
    return out


def dataset_to_array(ds: Dataset, frame: int | None = None, where: str = "DICOM") -> np.ndarray:
    """One frame of a DICOM dataset as 8-bit values: H x W grey or H x W x 3 RGB (uint8).
    Raises ImageError."""
    return frame_to_uint8(decode_frame(ds, frame, where), ds, where)


def frame_to_uint8(
    stored: np.ndarray, ds: Dataset, where: str = "DICOM", grey_attrs: Dataset | None = None
) -> np.ndarray:
    """A decoded frame's stored values (decode_frame) as 8-bit values: colour through the
    palette or the bit depth, grey through grey_to_uint8 with `grey_attrs` (the frame's own
    attributes in a multi-frame object; default the dataset's). Raises ImageError."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    try:
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(stored, ds)
            bits = 8 if rgb.max() <= 255 else 16
            return to_uint8(rgb, 0, 2**bits - 1)
        if stored.ndim == 3 and stored.shape[-1] == 3:
            if stored.dtype != np.uint8:
                stored = to_uint8(stored, 0, 2 ** int(ds.get("BitsStored", 16)) - 1)
            return stored
        if stored.ndim != 2:
            raise ImageError(f"{where}: unexpected pixel array shape {stored.shape}")
        return grey_to_uint8(stored, ds if grey_attrs is None else grey_attrs)
    except (ValueError, AttributeError, KeyError, IndexError) as exc:
        raise ImageError(f"{where}: cannot convert DICOM pixel data ({exc})") from exc
