"""The synthetic whole slide of `make pacs` (serve.pacs.slide): a VL Whole Slide
Microscopy pyramid a WSI reader accepts (one series, TILED_FULL JPEG frames, the spacing in
the shared functional groups), small, the same bytes every time, no real patient."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage

from serve.pacs import slide


@pytest.fixture(scope="module")
def pyramid() -> list[Dataset]:
    return slide.slide_pyramid(slide.SLIDE)


def part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_the_pyramid_is_three_tiled_full_levels_of_one_series(pyramid) -> None:
    assert {str(ds.SeriesInstanceUID) for ds in pyramid} == {str(slide.uid(slide.SLIDE, "series"))}
    assert [ds.TotalPixelMatrixColumns for ds in pyramid] == [7168, 3584, 1792]
    for level, ds in enumerate(pyramid):
        assert ds.SOPClassUID == VLWholeSlideMicroscopyImageStorage and ds.Modality == "SM"
        assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        assert ds.DimensionOrganizationType == "TILED_FULL" and ds.ImageType[2] == "VOLUME"
        tiles = math.ceil(ds.TotalPixelMatrixColumns / 512) * math.ceil(
            ds.TotalPixelMatrixRows / 512
        )
        assert ds.NumberOfFrames == tiles and ds.Rows == ds.Columns == 512
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        assert [float(v) for v in measures.PixelSpacing] == pytest.approx([0.0005 * 2**level] * 2)
        frames = list(generate_frames(ds.PixelData, number_of_frames=tiles))
        assert len(frames) == tiles and all(f[:2] == b"\xff\xd8" for f in frames)  # JPEG


def test_the_slide_is_small_and_the_same_bytes_every_time(pyramid) -> None:
    data = [part10(ds) for ds in pyramid]
    assert sum(map(len, data)) < 3_000_000, [len(d) for d in data]
    assert [part10(ds) for ds in slide.slide_pyramid(slide.SLIDE)] == data


def test_the_tissue_lies_on_its_cells_and_the_blank_slide_is_glass() -> None:
    picture = slide.picture_10x(slide.SLIDE).astype(float) @ np.array([0.299, 0.587, 0.114])
    cells = {
        (r, c): picture[r * 896 : (r + 1) * 896, c * 896 : (c + 1) * 896].mean()
        for r in range(3)
        for c in range(4)
    }
    tissue = {cell for cell, luma in cells.items() if luma <= 0.8 * 255}
    assert tissue == set(slide.SLIDE.tissue), cells
    assert (slide.picture_10x(slide.BLANK) == slide.GLASS).all()


def test_no_real_patient(pyramid) -> None:
    for ds in pyramid:
        assert str(ds.PatientName) == "PHANTOM^SLIDE" and ds.PatientID == "PHANTOM-0004"
        assert ds.PatientBirthDate == "" and "not a patient" in ds.StudyDescription
