"""A synthetic CT series (a chest-like phantom with one small round lesion) as pydicom
Datasets, for the test PACS and for people trying the DICOMweb round trip (pure).

`phantom_series(spec)` -> one Dataset per axial slice, ordered by InstanceNumber (1..N)
and by position along the slice normal (z increases by `spec.slice_mm` each slice):

- body: an elliptic cylinder of water (0 HU) in air (-1000 HU), with two lungs (-850 HU)
  and a spine (+700 HU), so the lung, soft-tissue and bone windows each show something;
  with `spec.fat_mm` > 0, the body's outer `fat_mm` are subcutaneous fat (-100 HU);
- lesion: a sphere of `spec.lesion_hu` (+60 HU) in the soft tissue between the lungs,
  centred on slice `spec.lesion_slice` (0-based), `spec.lesion_radius_mm` in radius;
- pixels: int16, stored value = HU + 1024 (RescaleSlope 1, RescaleIntercept -1024), with
  seeded Gaussian noise of `spec.noise_hu`; WindowCenter/Width 40/400 (soft tissue);
- description: SeriesDescription is `spec.description`;
- geometry: ImageOrientationPatient [1,0,0,0,1,0], PixelSpacing, SliceThickness and
  SpacingBetweenSlices, ImagePositionPatient of each slice's first pixel centre;
- identifiers: one study, one series, one frame of reference; UIDs derived from
  `spec.seed`, so the same spec gives the same UIDs on every run; the patient is
  PATIENT_NAME / PATIENT_ID, obviously fake, so tests can check they never reach a prompt.

`hu_volume(spec)` is the noiseless volume in HU, shape (slices, rows, cols), for tests.
What every synthetic series shares (identifiers, plane, Part 10 files) is serve.pacs.series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage

from serve.pacs.series import Plane, Series, part10, stored_bytes
from serve.pacs.series import slice_dataset as slice_dataset_of

PATIENT_NAME = "PHANTOM^CT"
PATIENT_ID = "PHANTOM-0001"
RESCALE_INTERCEPT = -1024
SOFT_TISSUE_WINDOW = (40, 400)  # centre, width in HU
AIR_HU, WATER_HU, LUNG_HU, BONE_HU, FAT_HU = -1000, 0, -850, 700, -100


@dataclass(frozen=True)
class PhantomSpec:
    """What the phantom looks like. Distances in mm, patient coordinates (LPS)."""

    slices: int = 60
    size: int = 128  # rows = columns
    field_of_view_mm: float = 384.0  # PixelSpacing = field_of_view_mm / size
    slice_mm: float = 2.5  # SliceThickness = SpacingBetweenSlices
    lesion_hu: float = 60.0
    lesion_radius_mm: float = 12.0
    lesion_centre_xy_mm: tuple[float, float] = (0.0, -50.0)
    lesion_slice: int | None = None  # None: the middle slice
    noise_hu: float = 5.0
    fat_mm: float = 0.0  # subcutaneous fat inside the body's outline; 0: none
    description: str = "Axial phantom with one round lesion"  # SeriesDescription
    seed: int = 0  # noise and UIDs: two series in one PACS need two seeds

    @property
    def pixel_mm(self) -> float:
        return self.field_of_view_mm / self.size

    @property
    def lesion_index(self) -> int:
        return self.slices // 2 if self.lesion_slice is None else self.lesion_slice

    def z_mm(self, index: int) -> float:
        """Position of slice `index` along the normal (the volume is centred on z = 0)."""
        return (index - (self.slices - 1) / 2) * self.slice_mm

    def origin_xy_mm(self) -> tuple[float, float]:
        """x, y of the centre of the first (top-left) pixel."""
        half = (self.size - 1) / 2 * self.pixel_mm
        return -half, -half


def uid(spec: PhantomSpec, what: str) -> UID:
    """A UID that depends only on the seed and `what` (study, series, frame, slice-n)."""
    return series(spec).uid(what)


def hu_volume(spec: PhantomSpec = PhantomSpec()) -> np.ndarray:
    """The noiseless phantom in HU, float32, shape (slices, rows, cols)."""
    x0, y0 = spec.origin_xy_mm()
    coords = np.arange(spec.size) * spec.pixel_mm
    x = (x0 + coords)[None, :]  # columns run along +x
    y = (y0 + coords)[:, None]  # rows run along +y
    image = np.full((spec.size, spec.size), AIR_HU, np.float32)
    image[(x / 150) ** 2 + (y / 110) ** 2 <= 1] = FAT_HU
    inner_x, inner_y = 150 - spec.fat_mm, 110 - spec.fat_mm  # the body itself when fat_mm = 0
    image[(x / inner_x) ** 2 + (y / inner_y) ** 2 <= 1] = WATER_HU
    for side in (-1, 1):
        image[((x - side * 75) / 45) ** 2 + ((y + 5) / 70) ** 2 <= 1] = LUNG_HU
    image[x**2 + (y - 85) ** 2 <= 15**2] = BONE_HU
    volume = np.repeat(image[None], spec.slices, axis=0)
    lx, ly = spec.lesion_centre_xy_mm
    lz = spec.z_mm(spec.lesion_index)
    for k in range(spec.slices):
        dz = spec.z_mm(k) - lz
        r2 = spec.lesion_radius_mm**2 - dz**2
        if r2 > 0:
            volume[k][(x - lx) ** 2 + (y - ly) ** 2 <= r2] = spec.lesion_hu
    return volume


def stored_pixels(spec: PhantomSpec) -> np.ndarray:
    """The stored int16 values (HU - RescaleIntercept), with the seeded noise."""
    volume = hu_volume(spec)
    if spec.noise_hu:
        volume = volume + np.random.default_rng(spec.seed).normal(0, spec.noise_hu, volume.shape)
    return np.clip(np.rint(volume - RESCALE_INTERCEPT), -32768, 32767).astype(np.int16)


def series(spec: PhantomSpec) -> Series:
    return Series(
        sop_class=CTImageStorage,
        modality="CT",
        patient_name=PATIENT_NAME,
        patient_id=PATIENT_ID,
        study_description="Synthetic CT phantom (not a patient)",
        series_description=spec.description,
        body_part="CHEST",
        date="20240101",
        time="120000",
        uid_source="medgemma-serve CT phantom",
        seed=spec.seed,
    )


def slice_dataset(spec: PhantomSpec, index: int, pixels: np.ndarray) -> Dataset:
    """Slice `index` (0-based) of the series, with its file meta and preamble."""
    x0, y0 = spec.origin_xy_mm()
    plane = Plane(
        index=index,
        position=(x0, y0, spec.z_mm(index)),
        orientation=(1, 0, 0, 0, 1, 0),
        along_normal_mm=spec.z_mm(index),
        size=spec.size,
        pixel_mm=spec.pixel_mm,
        slice_mm=spec.slice_mm,
    )
    ds = slice_dataset_of(series(spec), plane, ["ORIGINAL", "PRIMARY", "AXIAL"])
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter, ds.WindowWidth = SOFT_TISSUE_WINDOW
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.PixelData = stored_bytes(pixels, "<i2")
    return part10(ds)


def phantom_series(spec: PhantomSpec = PhantomSpec()) -> list[Dataset]:
    """The whole series, one Dataset per slice, in InstanceNumber order."""
    pixels = stored_pixels(spec)
    return [slice_dataset(spec, k, pixels[k]) for k in range(spec.slices)]
