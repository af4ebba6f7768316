"""The chest X-ray pair (pure): one fake patient, two studies months apart, DX images that
are not square, and a change between them where the effusion is (and nowhere else)."""

from __future__ import annotations

import numpy as np
import pytest

from clients.series import choose_series, group_series
from clients.windows import VOI, window_frame
from serve.pacs import radiograph
from serve.pacs.radiograph import COLUMNS, CURRENT, PRIOR, ROWS, chest_pair, lungs


@pytest.fixture(scope="module")
def pair() -> list:
    return chest_pair()


def test_two_studies_of_one_fake_patient_months_apart(pair: list) -> None:
    prior, current = pair
    assert prior.PatientID == current.PatientID == radiograph.PATIENT_ID
    assert "PHANTOM" in str(prior.PatientName)
    assert prior.StudyInstanceUID != current.StudyInstanceUID
    assert prior.SOPInstanceUID != current.SOPInstanceUID
    assert prior.StudyDate < current.StudyDate
    assert prior.Modality == current.Modality == "DX"
    assert (prior.Rows, prior.Columns) == (ROWS, COLUMNS) and ROWS != COLUMNS
    assert prior.ViewPosition == "PA" and prior.BodyPartExamined == "CHEST"
    assert chest_pair()[1].SOPInstanceUID == current.SOPInstanceUID  # reproducible


def test_the_change_is_the_effusion_in_the_left_lung_base(pair: list) -> None:
    images = []
    for ds in pair:
        (series,) = group_series([ds])
        s = choose_series([series]).slices[0]
        images.append(window_frame(s.source, s.frame, s.attrs, VOI).astype(np.int16))
    diff = np.abs(images[1] - images[0]) > 60  # well above the noise
    y, x = np.mgrid[0:ROWS, 0:COLUMNS]
    _, left = lungs(y.astype(np.float32), x.astype(np.float32))
    assert diff.sum() > 2000, diff.sum()  # visible: thousands of pixels brighter
    assert (diff & ~left).sum() == 0  # nowhere but in the patient's left lung
    changed_rows = np.nonzero(diff.any(axis=1))[0]
    assert changed_rows.min() > ROWS // 2  # at its base
    assert PRIOR.effusion == 0 < CURRENT.effusion
