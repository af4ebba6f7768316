"""A synthetic chest radiograph pair (prior and current, one obviously fake patient) as
pydicom Datasets, for the test PACS and for the client's comparison and localization
recipes (pure).

`chest_study(spec)` -> one DX image (Digital X-Ray Image Storage - For Presentation), a
PA chest seen as a radiograph is (MONOCHROME2: dense is bright): a soft-tissue body, two
dark lungs, a bright mediastinum and heart shadow, a spine and two clavicles; with
`spec.effusion` > 0 a pleural effusion fills the base of the patient's left lung (the image's
right side) to that fraction of the lung's height, with a meniscus. PRIOR has none, CURRENT
a third of the lung: the visible change between the two studies.

- pixels: unsigned 12-bit (BitsAllocated 16, BitsStored 12), seeded Gaussian noise;
  portrait, ROWS x COLUMNS (not square: the localization recipe pads it);
  WindowCenter/Width over the whole range; ImagerPixelSpacing; ViewPosition PA,
  PatientOrientation L\\F (rows run to the patient's left, columns to the feet);
- identifiers: each study its own study, series and instance UIDs, derived from the seed;
  the same patient (PATIENT_NAME / PATIENT_ID, obviously fake) and dates months apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, DigitalXRayImageStorageForPresentation

from serve.pacs.series import Series, instance_dataset, part10, stored_bytes

PATIENT_NAME = "PHANTOM^CXR"
PATIENT_ID = "PHANTOM-0003"
ROWS, COLUMNS = 384, 320
PIXEL_MM = 1.2  # ImagerPixelSpacing: a 46 x 38 cm detector
MAX_STORED = 4095
# stored values (12 bits) of what the beam crosses; dense is bright
AIR, BODY, LUNG, MEDIASTINUM, BONE, FLUID = 150, 1900, 700, 2700, 3400, 2300


@dataclass(frozen=True)
class ChestSpec:
    """One study of the pair: when, what it shows, its seed (noise and UIDs)."""

    date: str  # StudyDate (DA)
    time: str = "090000"
    effusion: float = 0.0  # fraction of the left lung's height filled from its base; 0: none
    noise: float = 30.0
    seed: int = 0
    description: str = "Synthetic chest radiograph, PA (not a patient)"


PRIOR = ChestSpec(date="20240108", seed=3001)
CURRENT = ChestSpec(date="20240415", time="101500", effusion=0.35, seed=3002)


def series(spec: ChestSpec) -> Series:
    return Series(
        sop_class=DigitalXRayImageStorageForPresentation,
        modality="DX",
        patient_name=PATIENT_NAME,
        patient_id=PATIENT_ID,
        study_description="Synthetic chest X-ray (not a patient)",
        series_description=spec.description,
        body_part="CHEST",
        date=spec.date,
        time=spec.time,
        uid_source="medgemma-serve chest radiograph",
        seed=spec.seed,
    )


def uid(spec: ChestSpec, what: str) -> UID:
    """The study's UIDs: study, series, frame, slice-0 (the image)."""
    return series(spec).uid(what)


def lungs(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image-left (patient's right) and image-right (patient's left) lung masks."""
    right = ((x - 100) / 62) ** 2 + ((y - 190) / 125) ** 2 <= 1
    left = ((x - 220) / 58) ** 2 + ((y - 195) / 120) ** 2 <= 1
    return right, left


def chest_values(spec: ChestSpec) -> np.ndarray:
    """The noiseless image in stored values, float32, ROWS x COLUMNS."""
    y, x = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float32)
    image = np.full((ROWS, COLUMNS), AIR, np.float32)
    image[((x - 160) / 150) ** 2 + ((y - 210) / 185) ** 2 <= 1] = BODY
    right, left = lungs(y, x)
    image[right | left] = LUNG
    heart = ((x - 180) / 55) ** 2 + ((y - 250) / 50) ** 2 <= 1
    image[(np.abs(x - 160) <= 22) & (y >= 60) & (y <= 300) | heart] = MEDIASTINUM
    image[(np.abs(x - 160) <= 10) & (y >= 20)] = BONE  # the spine
    for side in (-1, 1):  # the clavicles: thick bars rising outwards from the sternum
        run = side * (x - 160)
        image[(run >= 15) & (run <= 115) & (np.abs(y - (70 - 0.25 * run)) <= 6)] = BONE
    if spec.effusion > 0:
        top, bottom = 195 - 120, 195 + 120
        level = bottom - spec.effusion * (bottom - top)
        meniscus = level - 0.4 * np.clip(x - 190, 0, None)  # rising to the chest wall
        image[left & ~heart & (y >= meniscus)] = FLUID
    return image


def stored_pixels(spec: ChestSpec) -> np.ndarray:
    values = chest_values(spec)
    if spec.noise:
        values = values + np.random.default_rng(spec.seed).normal(0, spec.noise, values.shape)
    return np.clip(np.rint(values), 0, MAX_STORED).astype(np.uint16)


def chest_study(spec: ChestSpec) -> Dataset:
    """The study's one image, with its file meta and preamble."""
    ds = instance_dataset(series(spec), 0, ["ORIGINAL", "PRIMARY"])
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [PIXEL_MM, PIXEL_MM]
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = (MAX_STORED + 1) // 2, MAX_STORED + 1
    ds.PixelData = stored_bytes(stored_pixels(spec), "<u2")
    return part10(ds)


def chest_pair() -> list[Dataset]:
    """The prior study's image, then the current's."""
    return [chest_study(PRIOR), chest_study(CURRENT)]
