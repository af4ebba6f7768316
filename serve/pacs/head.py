"""A synthetic MR series (a T1-weighted head: scalp, skull, brain, ventricles) as pydicom
Datasets, for the test PACS and for trying the client's MR volume recipe (pure).

`head_series(spec)` -> one MR Image Storage Dataset per sagittal slice, ordered by
InstanceNumber (1..N) and by position along the slice normal:

- anatomy, in patient coordinates (LPS, mm; the head centred on the isocentre), nested
  ellipsoids: scalp (fat, bright in T1), skull (cortical bone, dark), grey matter, white
  matter (brighter), and two lateral ventricles of CSF (dark) either side of the midline;
  air outside; `signal_volume(spec)` is this volume without noise, in stored values;
- pixels: unsigned 12-bit stored values (BitsAllocated 16, BitsStored 12, HighBit 11,
  PixelRepresentation 0), the magnitude of signal + complex seeded Gaussian noise of
  `spec.noise` (Rician, as a magnitude image is: the air is noise, never negative); no
  RescaleSlope / RescaleIntercept (MR values have no physical unit such as HU);
- acquisition: a 2D spin echo at 1.5 T (ScanningSequence SE, SequenceVariant NONE,
  RepetitionTime 500 ms, EchoTime 15 ms, MagneticFieldStrength 1.5, 1H at 63.87 MHz);
- geometry: ImageOrientationPatient [0,1,0, 0,0,-1] (rows run anterior to posterior,
  columns superior to inferior), so the normal (row x column) is -x, towards the patient's
  right; ImagePositionPatient steps `spec.slice_mm` along it (first slice on the left);
  PixelSpacing, SliceThickness = SpacingBetweenSlices, SliceLocation the position along
  the normal; one frame of reference;
- identifiers: one study, one series, UIDs derived from `spec.seed` (the same spec, the same
  UIDs); the patient is PATIENT_NAME / PATIENT_ID, obviously fake.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, MRImageStorage

from serve.pacs.series import Plane, Series, part10, stored_bytes
from serve.pacs.series import slice_dataset as slice_dataset_of

PATIENT_NAME = "PHANTOM^MR"
PATIENT_ID = "PHANTOM-0002"
MAX_STORED = 4095  # 12 bits
ORIENTATION = (0, 1, 0, 0, 0, -1)  # sagittal: row direction +y (posterior), column -z (down)
NORMAL = np.cross(ORIENTATION[:3], ORIENTATION[3:])  # (-1, 0, 0)
# T1-weighted signal of each tissue, in stored values (0..4095)
AIR, SCALP, SKULL, GREY, WHITE, CSF = 0, 3000, 250, 1500, 2200, 400
HEAD_AXES_MM = (72.0, 92.0, 100.0)  # semi-axes of the head along x (L), y (P), z (S)
SCALP_MM, SKULL_MM = 5.0, 7.0
WHITE_SCALE = 0.7  # the white matter: the brain's ellipsoid scaled by this
VENTRICLE_AXES_MM = (6.0, 28.0, 12.0)
VENTRICLE_CENTRES_MM = ((-10.0, 0.0, 15.0), (10.0, 0.0, 15.0))  # right, left


@dataclass(frozen=True)
class HeadSpec:
    """What the head phantom looks like. Distances in mm, patient coordinates (LPS)."""

    slices: int = 40
    size: int = 256  # rows = columns
    field_of_view_mm: float = 256.0  # PixelSpacing = field_of_view_mm / size
    slice_mm: float = 4.0  # SliceThickness = SpacingBetweenSlices
    noise: float = 20.0  # standard deviation of each noise component, in stored values
    seed: int = 0

    @property
    def pixel_mm(self) -> float:
        return self.field_of_view_mm / self.size

    def along_normal_mm(self, index: int) -> float:
        """Position of slice `index` along the normal (the stack is centred on the isocentre)."""
        return (index - (self.slices - 1) / 2) * self.slice_mm

    def position(self, index: int) -> np.ndarray:
        """ImagePositionPatient of slice `index`: the centre of its first pixel (row 0,
        column 0: the most anterior and superior one)."""
        half = (self.size - 1) / 2 * self.pixel_mm
        in_plane = -half * np.array(ORIENTATION[:3]) - half * np.array(ORIENTATION[3:])
        return in_plane + self.along_normal_mm(index) * NORMAL


def uid(spec: HeadSpec, what: str) -> UID:
    """A UID that depends only on the seed and `what` (study, series, frame, slice-n)."""
    return series(spec).uid(what)


def patient_coordinates(spec: HeadSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y, z (mm) of every voxel centre, broadcastable to (slices, rows, columns)."""
    steps = np.arange(spec.size) * spec.pixel_mm
    first = spec.position(0)
    x = np.array([spec.position(k)[0] for k in range(spec.slices)])[:, None, None]
    y = (first[1] + steps)[None, None, :]  # columns run along +y
    z = (first[2] - steps)[None, :, None]  # rows run along -z
    return x, y, z


def ellipsoid(
    xyz: tuple[np.ndarray, ...], centre: tuple[float, ...], axes: tuple[float, ...]
) -> np.ndarray:
    """Whether each voxel centre lies in the axis-aligned ellipsoid (broadcast shape)."""
    x, y, z = xyz
    return (
        ((x - centre[0]) / axes[0]) ** 2
        + ((y - centre[1]) / axes[1]) ** 2
        + ((z - centre[2]) / axes[2]) ** 2
    ) <= 1


def signal_volume(spec: HeadSpec = HeadSpec()) -> np.ndarray:
    """The noiseless head in stored values, float32, shape (slices, rows, cols)."""
    xyz = patient_coordinates(spec)
    volume = np.full((spec.slices, spec.size, spec.size), AIR, np.float32)
    origin = (0.0, 0.0, 0.0)
    skull = tuple(a - SCALP_MM for a in HEAD_AXES_MM)
    brain = tuple(a - SCALP_MM - SKULL_MM for a in HEAD_AXES_MM)
    white = tuple(a * WHITE_SCALE for a in brain)
    for axes, value in ((HEAD_AXES_MM, SCALP), (skull, SKULL), (brain, GREY), (white, WHITE)):
        volume[np.broadcast_to(ellipsoid(xyz, origin, axes), volume.shape)] = value
    for centre in VENTRICLE_CENTRES_MM:
        volume[np.broadcast_to(ellipsoid(xyz, centre, VENTRICLE_AXES_MM), volume.shape)] = CSF
    return volume


def stored_pixels(spec: HeadSpec) -> np.ndarray:
    """The stored uint16 values: the magnitude of the signal plus complex seeded noise."""
    volume = signal_volume(spec)
    if spec.noise:
        rng = np.random.default_rng(spec.seed)
        real = volume + rng.normal(0, spec.noise, volume.shape)
        volume = np.hypot(real, rng.normal(0, spec.noise, volume.shape))
    return np.clip(np.rint(volume), 0, MAX_STORED).astype(np.uint16)


def series(spec: HeadSpec) -> Series:
    return Series(
        sop_class=MRImageStorage,
        modality="MR",
        patient_name=PATIENT_NAME,
        patient_id=PATIENT_ID,
        study_description="Synthetic MR head phantom (not a patient)",
        series_description="Sagittal T1 SE head phantom",
        body_part="HEAD",
        date="20240102",
        time="090000",
        uid_source="medgemma-serve MR head phantom",
        seed=spec.seed,
    )


def slice_dataset(spec: HeadSpec, index: int, pixels: np.ndarray) -> Dataset:
    """Slice `index` (0-based) of the series, with its file meta and preamble."""
    position = spec.position(index)
    plane = Plane(
        index=index,
        position=(float(position[0]), float(position[1]), float(position[2])),
        orientation=ORIENTATION,
        along_normal_mm=spec.along_normal_mm(index),
        size=spec.size,
        pixel_mm=spec.pixel_mm,
        slice_mm=spec.slice_mm,
    )
    ds = slice_dataset_of(series(spec), plane, ["ORIGINAL", "PRIMARY", "M", "ND"])
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = 500
    ds.EchoTime = 15
    ds.EchoTrainLength = 1
    ds.NumberOfAverages = 1
    ds.ImagingFrequency = 63.87
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = 1.5
    ds.FlipAngle = 90
    ds.PatientPosition = "HFS"
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = 1500, 3000
    ds.PixelData = stored_bytes(pixels, "<u2")
    return part10(ds)


def head_series(spec: HeadSpec = HeadSpec()) -> list[Dataset]:
    """The whole series, one Dataset per slice, in InstanceNumber order."""
    pixels = stored_pixels(spec)
    return [slice_dataset(spec, k, pixels[k]) for k in range(spec.slices)]
