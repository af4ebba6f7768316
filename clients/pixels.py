"""Numbers -> 8-bit display values (pure): the one mapping that DICOM decoding, CT windows
and image encoding share."""

from __future__ import annotations

import numpy as np


def to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly onto 0..255, clipping outside (pure)."""
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def finite_range(values: np.ndarray) -> tuple[float, float]:
    """The (min, max) of the finite values; (0, 0) when there are none."""
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def stretch(values: np.ndarray) -> np.ndarray:
    """Map the values' own finite min..max onto 0..255 (NaN as the minimum)."""
    low, high = finite_range(values)
    if values.dtype.kind == "f":
        values = np.nan_to_num(values, nan=low)
    return to_uint8(values, low, high)
