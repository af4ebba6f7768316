"""Display windows for a slice: which exist, which fit a modality, and stored values -> an
8-bit array (pure).

CT is windowed in Hounsfield units (the modality LUT's output): a named window (lung, soft
tissue, bone, brain) gives one grey image; "rgb" gives three windows as the red, green and
blue channels, as Google's MedGemma 1.5 CT notebook encodes CT. Any modality can use "voi":
the file's own VOI LUT or window centre/width, else each slice's own min..max (clients.dicom).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from clients import dicom
from clients.errors import StudyError
from clients.pixels import to_uint8

HU_WINDOWS: dict[str, tuple[float, float]] = {  # name -> (width, level) in Hounsfield units
    "lung": (1500.0, -600.0),
    "soft-tissue": (400.0, 40.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}
# Google's MedGemma 1.5 CT notebook (high_dimensional_ct_hugging_face.ipynb), `window_clips`:
# red wide, green soft tissue ("mediastinum"), blue brain; (low, high) in HU.
RGB_WINDOWS: tuple[tuple[float, float], ...] = ((-1024.0, 1024.0), (-135.0, 215.0), (0.0, 80.0))
VOI = "voi"  # the file's own VOI LUT or window centre/width, else each slice's min..max
WINDOWS = ("rgb", *HU_WINDOWS, VOI)


def default_window(modality: str) -> str:
    return "rgb" if modality == "CT" else VOI


def check_window(window: str, modality: str) -> str:
    """The window, if it exists and fits the modality (StudyError naming the choice if not)."""
    if window not in WINDOWS:
        raise StudyError(f"unknown window {window!r}; choose one of {', '.join(WINDOWS)}")
    if window != VOI and modality != "CT":
        raise StudyError(
            f"window {window!r} is in Hounsfield units, which only CT has; this series is "
            f"{modality}: use --window {VOI} (the default for {modality})"
        )
    return window


def hounsfield(stored: np.ndarray, attrs: Dataset) -> np.ndarray:
    """Stored values through the modality LUT (RescaleSlope/Intercept): HU for CT."""
    return np.asarray(apply_modality_lut(stored, attrs), dtype=np.float32)


def window_frame(
    source: Dataset, frame: int | None, attrs: Dataset, window: str, where: str = "DICOM"
) -> np.ndarray:
    """One frame of `source` (None: a single-frame instance) through `window`, as uint8:
    H x W x 3 for "rgb" (and colour data under "voi"), H x W otherwise. `attrs` are the
    frame's own attributes (its functional groups in a multi-frame object)."""
    stored = dicom.decode_frame(source, frame, where)
    if window == VOI:
        return dicom.frame_to_uint8(stored, source, where, grey_attrs=attrs)
    if stored.ndim != 2:
        raise StudyError(f"{where}: colour pixel data cannot be windowed in Hounsfield units")
    hu = hounsfield(stored, attrs)
    if window == "rgb":
        return np.stack([to_uint8(hu, low, high) for low, high in RGB_WINDOWS], axis=-1)
    width, level = HU_WINDOWS[window]
    return to_uint8(hu, level - width / 2, level + width / 2)
