"""Display windows for a slice: which exist, which fit a modality, and stored values -> an
8-bit array (pure).

CT is windowed in Hounsfield units (the modality LUT's output): a named window (lung, soft
tissue, bone, brain) gives one grey image; "rgb" gives three windows as the red, green and
blue channels, as Google's MedGemma 1.5 CT notebook encodes CT. Any modality can use "voi":
the file's own VOI LUT or window centre/width, else each slice's own min..max (clients.dicom),
or "volume": one min..max over all the slices sent together, as Google's serving container
scales an MR acquisition (`volume_scale`).
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
# Google's MedGemma 1.5 CT notebook (Google-Health/medgemma, notebooks/
# high_dimensional_ct_hugging_face.ipynb), `window_clips`: red wide, green soft tissue
# ("mediastinum"), blue brain; (low, high) in HU. Google's serving container has green
# 135..215 (its `_MEDGEMMA_1_...` constant); we follow the notebook, which shows the model
# card's windows and whose lower bound, -135 HU, is fat.
RGB_WINDOWS: tuple[tuple[float, float], ...] = ((-1024.0, 1024.0), (-135.0, 215.0), (0.0, 80.0))
VOI = "voi"  # the file's own VOI LUT or window centre/width, else each slice's min..max
VOLUME = "volume"  # one min..max over all the slices sent (MR, as Google's serving container)
WINDOWS = ("rgb", *HU_WINDOWS, VOI, VOLUME)
ANY_MODALITY = (VOI, VOLUME)


def default_window(modality: str) -> str:
    return {"CT": "rgb", "MR": VOLUME}.get(modality, VOI)


def check_window(window: str, modality: str) -> str:
    """The window, if it exists and fits the modality (StudyError naming the choice if not)."""
    if window not in WINDOWS:
        raise StudyError(f"unknown window {window!r}; choose one of {', '.join(WINDOWS)}")
    if window not in ANY_MODALITY and modality != "CT":
        raise StudyError(
            f"window {window!r} is in Hounsfield units, which only CT has; this series is "
            f"{modality}: use --window {VOI} (each slice's own) or {VOLUME} (one scale for all)"
        )
    return window


def hounsfield(stored: np.ndarray, attrs: Dataset) -> np.ndarray:
    """Stored values through the modality LUT (RescaleSlope/Intercept): HU for CT."""
    return np.asarray(apply_modality_lut(stored, attrs), dtype=np.float32)


def notebook_window(hu: np.ndarray, low: float, high: float) -> np.ndarray:
    """The CT notebook's `norm`, then its rounding: clip to [low, high], scale to 0..255 in
    float32, np.round (half to even), uint8 (pure)."""
    clipped = np.clip(hu, low, high).astype(np.float32)
    scaled = (clipped - np.float32(low)) / np.float32(high - low) * np.float32(255.0)
    return np.round(scaled, 0).astype(np.uint8)


def volume_scale(volume: list[np.ndarray]) -> list[np.ndarray]:
    """Slices scaled together to 0..255, as Google's serving container scales an MR volume
    (`_process_buffered_mri_volume`): one min and max over all of them, np.round, and 255
    everywhere when max == min (pure)."""
    if not volume:
        return []
    low = min(float(np.min(v)) for v in volume)
    delta = max(float(np.max(v)) for v in volume) - low
    out = []
    for values in volume:
        image = values.astype(np.float64)
        if delta == 0:
            image[...] = 255
        else:
            image = np.round((image - low) / delta * 255, 0)
        out.append(image.astype(np.uint8))
    return out


def modality_values(
    source: Dataset, frame: int | None, attrs: Dataset, where: str = "DICOM"
) -> np.ndarray:
    """One grey frame through the modality LUT (float32), for `volume_scale`."""
    stored = dicom.decode_frame(source, frame, where)
    if stored.ndim != 2:
        raise StudyError(f"{where}: colour pixel data cannot be scaled as a volume")
    return hounsfield(stored, attrs)


def window_frame(
    source: Dataset, frame: int | None, attrs: Dataset, window: str, where: str = "DICOM"
) -> np.ndarray:
    """One frame of `source` (None: a single-frame instance) through `window`, as uint8:
    H x W x 3 for "rgb" (and colour data under "voi"), H x W otherwise. `attrs` are the
    frame's own attributes (its functional groups in a multi-frame object). Not for
    VOLUME, which scales slices together (modality_values, volume_scale)."""
    if window == VOLUME:  # a volume of one frame
        return volume_scale([modality_values(source, frame, attrs, where)])[0]
    stored = dicom.decode_frame(source, frame, where)
    if window == VOI:
        return dicom.frame_to_uint8(stored, source, where, grey_attrs=attrs)
    if stored.ndim != 2:
        raise StudyError(f"{where}: colour pixel data cannot be windowed in Hounsfield units")
    hu = hounsfield(stored, attrs)
    if window == "rgb":
        return np.stack([notebook_window(hu, low, high) for low, high in RGB_WINDOWS], axis=-1)
    width, level = HU_WINDOWS[window]
    return to_uint8(hu, level - width / 2, level + width / 2)
