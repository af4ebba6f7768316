"""What every synthetic series in the test PACS shares (pure): the patient, study, series,
frame-of-reference, image-plane and image-pixel attributes of one slice, and the Part 10
wrapping. serve.pacs.phantom (CT) and serve.pacs.head (MR) add their modality's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid


@dataclass(frozen=True)
class Series:
    """One synthetic series: who, what and when, the same for each of its slices."""

    sop_class: UID
    modality: str
    patient_name: str
    patient_id: str
    study_description: str
    series_description: str
    body_part: str
    date: str  # DA, for the study, series and content
    time: str  # TM
    uid_source: str  # with the seed, what every UID of the series is derived from
    seed: int

    def uid(self, what: str) -> UID:
        """A UID that depends only on the series' source, its seed and `what`."""
        return generate_uid(entropy_srcs=[self.uid_source, str(self.seed), what])


@dataclass(frozen=True)
class Plane:
    """Where one slice lies: its image plane, in patient coordinates (LPS, mm)."""

    index: int  # 0-based; InstanceNumber is index + 1
    position: tuple[float, float, float]  # ImagePositionPatient: the first pixel's centre
    orientation: tuple[int, int, int, int, int, int]  # ImageOrientationPatient
    along_normal_mm: float  # SliceLocation
    size: int  # Rows = Columns
    pixel_mm: float
    slice_mm: float  # SliceThickness = SpacingBetweenSlices


def instance_dataset(series: Series, index: int, image_type: list[str]) -> Dataset:
    """The patient, study, series and SOP attributes of instance `index` (0-based) of
    `series`: what every synthetic image has, with an image plane or without (a radiograph)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = image_type
    ds.SOPClassUID = series.sop_class
    ds.SOPInstanceUID = series.uid(f"slice-{index}")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = series.date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = series.time
    ds.AccessionNumber = ""
    ds.Modality = series.modality
    ds.Manufacturer = "medgemma-serve synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = series.study_description
    ds.SeriesDescription = series.series_description
    ds.PatientName = series.patient_name
    ds.PatientID = series.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = series.body_part
    ds.StudyInstanceUID = series.uid("study")
    ds.SeriesInstanceUID = series.uid("series")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    return ds


def slice_dataset(series: Series, plane: Plane, image_type: list[str]) -> Dataset:
    """The attributes every slice of `series` has, for the slice at `plane`: the caller adds
    its modality's acquisition, pixel encoding and PixelData, then calls `part10`."""
    ds = instance_dataset(series, plane.index, image_type)
    ds.SliceThickness = plane.slice_mm
    ds.SpacingBetweenSlices = plane.slice_mm
    ds.ImagePositionPatient = [round(float(v), 4) + 0.0 for v in plane.position]
    ds.ImageOrientationPatient = list(plane.orientation)
    ds.FrameOfReferenceUID = series.uid("frame")
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = round(plane.along_normal_mm, 4)
    ds.Rows = ds.Columns = plane.size
    ds.PixelSpacing = [round(plane.pixel_mm, 6), round(plane.pixel_mm, 6)]
    return ds


def part10(ds: Dataset) -> FileDataset:
    """`ds` with its file meta (explicit VR little endian, its SOP class and instance) and a
    preamble: written anywhere (STOW-RS included) as a Part 10 file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return FileDataset("", ds, file_meta=meta, preamble=b"\0" * 128)


def write_series(datasets: list[Dataset], folder: Path) -> list[Path]:
    """Write each Dataset as `<folder>/<InstanceNumber:04d>.dcm`; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{int(ds.InstanceNumber):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def stored_bytes(pixels: np.ndarray, dtype: str) -> bytes:
    """PixelData of one slice: `pixels` as little-endian `dtype` ("<u2", "<i2")."""
    return np.ascontiguousarray(pixels, dtype=dtype).tobytes()
