"""The PACS's two volumes (pure): the 120-slice CT volume (serve.pacs.samples.CT_VOLUME, the
CT phantom with fat) and the 40-slice sagittal MR head (serve.pacs.head): geometry read back
from the DICOM attributes alone (order along the normal, even spacing, pixels where the
anatomy is), HU and the recipe's windows for the CT, the 12-bit unsigned range for the MR."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import CTImageStorage, MRImageStorage

from serve.pacs import head
from serve.pacs.head import HeadSpec, head_series, signal_volume
from serve.pacs.phantom import PhantomSpec, phantom_series
from serve.pacs.samples import CT_VOLUME, MR_VOLUME, PHANTOM, SAMPLE_FILES, synthetic_labels
from serve.pacs.samples import all_samples as every_sample

# MedGemma 1.5's CT recipe (Google-Health/medgemma, high_dimensional_ct_hugging_face.ipynb):
# three windows in HU, as red, green and blue; written here as the oracle, not imported
RECIPE_WINDOWS = ((-1024, 1024), (-135, 215), (0, 80))


@pytest.fixture(scope="module")
def ct() -> list[pydicom.Dataset]:
    return phantom_series(CT_VOLUME)


@pytest.fixture(scope="module")
def mr() -> list[pydicom.Dataset]:
    return head_series(MR_VOLUME)


def along_normal(series: list[pydicom.Dataset]) -> np.ndarray:
    """Each slice's ImagePositionPatient dotted with the normal (row x column direction)."""
    iop = np.array(series[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    return np.array([normal @ np.array(ds.ImagePositionPatient, float) for ds in series])


def pixel_at(ds: pydicom.Dataset, point_mm: tuple[float, float, float]) -> tuple[int, int]:
    """(row, column) of the pixel whose centre is nearest `point_mm` (LPS), from the slice's
    ImagePositionPatient, ImageOrientationPatient and PixelSpacing alone."""
    iop = np.array(ds.ImageOrientationPatient, float)
    offset = np.array(point_mm) - np.array(ds.ImagePositionPatient, float)
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)  # between rows, between columns
    return round(float(offset @ iop[3:]) / row_mm), round(float(offset @ iop[:3]) / col_mm)


def patch(image: np.ndarray, rc: tuple[int, int], half: int = 2) -> np.ndarray:
    r, c = rc
    return image[r - half : r + half + 1, c - half : c + half + 1]


def check_stack(series: list[pydicom.Dataset], slices: int, step_mm: float) -> None:
    """One study, series and frame of reference; InstanceNumber 1..N; sorting by position
    along the normal gives InstanceNumber order; the positions step evenly by `step_mm`."""
    assert len(series) == slices
    assert [int(ds.InstanceNumber) for ds in series] == list(range(1, slices + 1))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({ds[keyword].value for ds in series}) == 1, keyword
    assert len({ds.SOPInstanceUID for ds in series}) == slices
    positions = along_normal(series)
    shuffled = np.random.default_rng(0).permutation(slices)
    by_position = sorted(shuffled, key=lambda k: positions[k])
    assert [int(series[k].InstanceNumber) for k in by_position] == list(range(1, slices + 1))
    assert np.allclose(np.diff(positions), step_mm), np.diff(positions)
    iop = np.array(series[0].ImageOrientationPatient, float)
    assert np.isclose(iop[:3] @ iop[3:], 0), iop  # orthogonal unit directions
    assert np.allclose(np.linalg.norm(iop.reshape(2, 3), axis=1), 1), iop
    for ds in series:
        assert list(ds.ImageOrientationPatient) == list(series[0].ImageOrientationPatient)
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == step_mm
        assert float(ds.SliceLocation) == pytest.approx(positions[int(ds.InstanceNumber) - 1])
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


# --- the CT volume --------------------------------------------------------------------


def test_ct_volume_is_a_regular_axial_stack_of_at_least_100_slices(
    ct: list[pydicom.Dataset],
) -> None:
    assert CT_VOLUME.slices >= 100
    check_stack(ct, CT_VOLUME.slices, CT_VOLUME.slice_mm)
    assert list(ct[0].ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
    for ds in ct:
        assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
        assert (ds.Rows, ds.Columns) == (CT_VOLUME.size, CT_VOLUME.size)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([CT_VOLUME.pixel_mm] * 2)
    assert ct[0].StudyInstanceUID != phantom_series(PhantomSpec(slices=1))[0].StudyInstanceUID
    assert [ds.SOPInstanceUID for ds in phantom_series(CT_VOLUME)] == [
        ds.SOPInstanceUID for ds in ct
    ]  # derived, not random: the same on every run


def test_ct_volume_hounsfield_units_where_the_geometry_says(ct: list[pydicom.Dataset]) -> None:
    """Each tissue found at its patient coordinates (through the DICOM geometry), in HU."""
    ds = ct[CT_VOLUME.lesion_index]
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.RescaleType) == (1, -1024, "HU")
    assert ds.pixel_array.dtype == np.int16
    image = np.asarray(apply_modality_lut(ds.pixel_array, ds))
    z = float(ds.ImagePositionPatient[2])
    where = {  # (x, y) in mm
        "air": ((-180.0, -150.0), -1000),
        "lung": ((75.0, -5.0), -850),
        "fat": ((0.0, -110.0 + CT_VOLUME.fat_mm / 2), -100),  # the anterior body wall
        "soft tissue": ((0.0, 30.0), 0),
        "lesion": (CT_VOLUME.lesion_centre_xy_mm, CT_VOLUME.lesion_hu),
        "bone": ((0.0, 85.0), 700),
    }
    got = {name: float(patch(image, pixel_at(ds, (*xy, z))).mean())
           for name, (xy, _) in where.items()}  # fmt: skip
    for name, (_, want) in where.items():
        assert got[name] == pytest.approx(want, abs=10), (name, got)
    far = np.asarray(apply_modality_lut(ct[0].pixel_array, ct[0]))  # the lesion is a sphere
    first_z = float(ct[0].ImagePositionPatient[2])
    lesion_rc = pixel_at(ct[0], (*CT_VOLUME.lesion_centre_xy_mm, first_z))
    assert float(patch(far, lesion_rc).mean()) == pytest.approx(0, abs=10)


def test_each_recipe_window_shows_something_in_the_ct_volume(ct: list[pydicom.Dataset]) -> None:
    """Per window, pairs of tissues that come out at clearly different grey levels (0-255)."""
    ds = ct[CT_VOLUME.lesion_index]
    image = np.asarray(apply_modality_lut(ds.pixel_array, ds), float)
    z = float(ds.ImagePositionPatient[2])
    points = {"air": (-180, -150), "lung": (75, -5), "fat": (0, -110 + CT_VOLUME.fat_mm / 2),
              "soft": (0, 30), "lesion": CT_VOLUME.lesion_centre_xy_mm,
              "bone": (0, 85)}  # fmt: skip
    hu = {name: patch(image, pixel_at(ds, (*xy, z))).mean() for name, xy in points.items()}

    def grey(window: tuple[int, int], tissue: str) -> float:
        lo, hi = window
        return float(np.clip((hu[tissue] - lo) / (hi - lo), 0, 1) * 255)

    full, soft, narrow = RECIPE_WINDOWS
    for a, b in (("air", "lung"), ("lung", "fat"), ("soft", "bone")):
        assert grey(full, b) - grey(full, a) > 15, (a, b, hu)
    for a, b in (("fat", "soft"), ("soft", "lesion"), ("lesion", "bone")):
        assert grey(soft, b) - grey(soft, a) > 15, (a, b, hu)
    assert grey(narrow, "lesion") - grey(narrow, "soft") > 100, hu


# --- the MR head ----------------------------------------------------------------------


def test_mr_volume_is_a_regular_sagittal_stack(mr: list[pydicom.Dataset]) -> None:
    check_stack(mr, MR_VOLUME.slices, MR_VOLUME.slice_mm)
    assert list(mr[0].ImageOrientationPatient) == [0, 1, 0, 0, 0, -1]
    iop = np.array(mr[0].ImageOrientationPatient, float)
    assert list(np.cross(iop[:3], iop[3:])) == [-1, 0, 0]  # sagittal: the normal is along x
    xs = [float(ds.ImagePositionPatient[0]) for ds in mr]
    assert xs[0] > 0 > xs[-1] and xs[0] == pytest.approx(-xs[-1])  # centred, left to right
    for ds in mr:
        assert ds.SOPClassUID == MRImageStorage and ds.Modality == "MR"
        sequence = (ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType)
        assert sequence == ("SE", "NONE", "2D"), sequence
        assert (float(ds.RepetitionTime), float(ds.EchoTime)) == (500, 15)
        assert float(ds.MagneticFieldStrength) == 1.5 and ds.BodyPartExamined == "HEAD"
        assert list(ds.ImagePositionPatient)[1:] == list(mr[0].ImagePositionPatient)[1:]
    assert mr[0].StudyInstanceUID not in {
        str(ds.StudyInstanceUID) for ds in phantom_series(PhantomSpec(slices=1))
    }


def test_mr_values_are_unsigned_12_bit_without_a_rescale(mr: list[pydicom.Dataset]) -> None:
    for ds in mr:
        bits = (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation)
        assert bits == (16, 12, 11, 0), bits
        assert "RescaleIntercept" not in ds and "RescaleSlope" not in ds
    pixels = np.stack([ds.pixel_array for ds in mr])
    assert pixels.dtype == np.uint16
    assert int(pixels.min()) >= 0 and int(pixels.max()) <= 4095, (pixels.min(), pixels.max())
    assert int(pixels.max()) > 2500  # the scalp: the range is used, not a few grey levels
    assert (pixels != head.stored_pixels(HeadSpec(noise=0.0))).any()  # seeded noise is there
    assert np.array_equal(pixels, np.stack([ds.pixel_array for ds in head_series(MR_VOLUME)]))


def test_mr_anatomy_where_the_geometry_says(mr: list[pydicom.Dataset]) -> None:
    """A lateral ventricle (CSF, dark in T1) in white matter, skull darker than scalp,
    noise-only air: found at patient coordinates through each slice's DICOM geometry."""
    (vx, vy, vz) = head.VENTRICLE_CENTRES_MM[1]
    ds = min(mr, key=lambda d: abs(float(d.ImagePositionPatient[0]) - vx))
    image = ds.pixel_array.astype(float)
    x = float(ds.ImagePositionPatient[0])

    def top(inset_mm: float) -> float:
        """z of the vertex of the head's ellipsoid shrunk by `inset_mm`, in this slice."""
        ax, _, az = (a - inset_mm for a in head.HEAD_AXES_MM)
        return az * float(np.sqrt(1 - (x / ax) ** 2))

    skull, brain = head.SCALP_MM, head.SCALP_MM + head.SKULL_MM
    at = {
        "ventricle": (x, vy, vz),
        "white matter": (x, vy, vz + 25),
        "grey matter": (x, 70.0, 0.0),
        "skull": (x, 0.0, (top(skull) + top(brain)) / 2),
        "scalp": (x, 0.0, (top(0) + top(skull)) / 2),
        "air": (x, 0.0, 120.0),
    }
    got = {name: float(patch(image, pixel_at(ds, p), 1).mean()) for name, p in at.items()}
    assert got["ventricle"] == pytest.approx(head.CSF, abs=60), got
    assert got["white matter"] == pytest.approx(head.WHITE, abs=60), got
    assert got["grey matter"] == pytest.approx(head.GREY, abs=60), got
    assert got["air"] < 80 and got["skull"] < 500 < 2500 < got["scalp"], got
    assert signal_volume(MR_VOLUME)[0].max() == head.AIR  # the outermost slice misses the head


# --- what the PACS is loaded with -----------------------------------------------------


def test_every_sample_study_is_distinct_and_labelled_without_patient_data() -> None:
    studies = list(dict.fromkeys(str(ds.StudyInstanceUID) for ds in every_sample()))
    assert len(studies) == len(SAMPLE_FILES) + 6, studies
    labels = synthetic_labels()
    assert set(labels) <= set(studies) and len(labels) == 6, labels
    assert labels[str(head.uid(MR_VOLUME, "study"))] == "MR head, 40 sagittal slices"
    assert all("PHANTOM" not in label for label in labels.values())
    without = every_sample(volumes=False, slides=False)
    assert len({str(ds.StudyInstanceUID) for ds in without}) == len(SAMPLE_FILES) + 1
    assert PHANTOM.slices == 60
