"""clients.study on the synthetic CT phantom and pydicom's bundled files: the sample, the
"SLICE n" layout, the allowed tags, and that no identifier reaches a prompt (the recipes and
the limits: test_recipes.py, test_limits.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID

from clients.errors import ImageError, StudyError
from clients.recipes import CT_VOLUME
from clients.study import (
    ALLOWED_TAGS,
    DEFAULT_TAGS,
    build_study_messages,
    sample_indices,
)
from serve.pacs.phantom import PATIENT_ID, PATIENT_NAME, phantom_series
from tests.studies import SPEC, bundled, images, one_line, texts

IDENTIFYING = {
    "InstitutionName": "ST ELSEWHERE GENERAL HOSPITAL",
    "AccessionNumber": "ACC-778899",
    "PatientBirthDate": "19610523",
    "OperatorsName": "TECH^OPERATOR",
    "ReferringPhysicianName": "REFERRER^DOCTOR",
}


@pytest.fixture
def phantom() -> list[Dataset]:
    return phantom_series(SPEC)


# --- sampling and budget --------------------------------------------------------------------


@pytest.mark.parametrize(("n", "budget"), [(60, 8), (60, 32), (85, 85 - 1), (7, 2), (100, 3)])
def test_sampling_is_even_and_keeps_first_and_last(n, budget):
    idx = sample_indices(n, budget)
    gaps = np.diff(idx)
    assert (len(idx), idx[0], idx[-1]) == (budget, 0, n - 1), idx
    assert gaps.min() >= 1 and gaps.max() - gaps.min() <= 1, idx


@pytest.mark.parametrize(("n", "budget"), [(5, 5), (5, 50), (1, 1), (0, 4)])
def test_a_budget_that_covers_the_series_keeps_every_slice(n, budget):
    assert sample_indices(n, budget) == list(range(n))


def test_a_budget_of_one_is_the_middle_slice_and_zero_is_refused():
    assert sample_indices(60, 1) == [29]
    with pytest.raises(ValueError, match="budget"):
        sample_indices(60, 0)


def test_slice_numbers_count_the_slices_sent_and_the_summary_keeps_the_positions(phantom):
    messages, sent = build_study_messages(phantom, "What do you see?", budget=5)
    parts = messages[-1]["content"]
    kinds = [p["type"] if p["type"] == "image_url" else p["text"] for p in parts]
    expected = [x for n in range(1, 6) for x in ("image_url", f"SLICE {n}")]
    assert kinds == [CT_VOLUME.instruction, *expected, "What do you see?"], kinds
    assert sent.indices == (0, 6, 12, 18, 24) and (sent.total, sent.sent) == (25, 5), sent
    assert sent.window == "rgb" and sent.modality == "CT"
    assert sent.line().startswith("sent 5 of 25 slices (CT, 3 windows): --max-slices 5; "), sent


def test_system_message_comes_first_and_a_volume_has_none_by_default(phantom):
    messages, _ = build_study_messages(
        phantom, "q", budget=2, system="You are an expert radiologist."
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    messages, _ = build_study_messages(phantom, "q", budget=2)
    assert [m["role"] for m in messages] == ["user"], "the notebook: one user turn"


def test_a_radiograph_is_one_image_without_a_slice_label():
    dx = bundled("CT_small.dcm")
    dx.Modality = "DX"
    messages, sent = build_study_messages([dx], "Describe this X-ray")
    assert [p["type"] for p in messages[-1]["content"]] == ["image_url", "text"]
    assert texts(messages) == ["Describe this X-ray"] and sent.window == "voi"
    ct = bundled("CT_small.dcm")  # a one-image CT series: one image, HU windows allowed
    messages, sent = build_study_messages([ct], "q", window="bone")
    assert (sent.total, sent.window, len(images(messages))) == (1, "bone", 1)


def test_an_unsupported_transfer_syntax_is_named_as_for_single_files(phantom):
    for ds in phantom:
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder
    with pytest.raises(ImageError, match=r"MPEG2.*1\.2\.840\.10008\.1\.2\.4\.100.*decoder") as exc:
        build_study_messages(phantom, "q", budget=2)
    assert one_line(exc).startswith("series ")


# --- identifiers ----------------------------------------------------------------------------


def test_no_identifier_of_the_input_reaches_the_messages(phantom):
    for ds in phantom:
        for keyword, value in IDENTIFYING.items():
            setattr(ds, keyword, value)
    messages, sent = build_study_messages(
        phantom, "Any lesion?", budget=6, tags=DEFAULT_TAGS, system="You are a radiologist."
    )
    sent_json = json.dumps(messages)
    first = phantom[0]
    identifiers = [PATIENT_NAME, PATIENT_ID, *IDENTIFYING.values()]
    identifiers += [str(first.get(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID")]
    identifiers += [str(ds.SOPInstanceUID) for ds in phantom]
    identifiers += [str(first.get(k)) for k in ("StudyDate", "StudyTime", "StudyDescription")]
    identifiers += [str(first.get(k)) for k in ("SeriesDescription", "FrameOfReferenceUID")]
    leaked = [v for v in identifiers if v and v in sent_json]
    assert not leaked, leaked
    summary = sent.line()
    assert not [v for v in [PATIENT_NAME, PATIENT_ID, *IDENTIFYING.values()] if v in summary]


def test_tags_add_only_the_allowed_tags_asked_for(phantom):
    messages, sent = build_study_messages(phantom, "q", budget=2, tags=DEFAULT_TAGS)
    line = texts(messages)[1]  # after the instruction
    assert line == "Modality: CT; Body Part Examined: CHEST; Slice Thickness: 5.0", line
    assert sent.tags == ("Modality", "BodyPartExamined", "SliceThickness")  # no ViewPosition
    messages, _ = build_study_messages(phantom, "q", budget=2)
    assert texts(messages)[1:] == ["SLICE 1", "SLICE 2", "q"], "no tags by default"


@pytest.mark.parametrize(
    "tag",
    ["PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber"]
    + ["InstitutionName", "StudyDescription", "SeriesInstanceUID", "PatientAge"],
)
def test_identifying_tags_are_refused(phantom, tag):
    assert tag not in ALLOWED_TAGS
    with pytest.raises(StudyError, match=rf"tag {tag} is not allowed in a prompt") as exc:
        build_study_messages(phantom, "q", budget=2, tags=("Modality", tag))
    one_line(exc)


def test_an_unknown_tag_is_refused(phantom):
    with pytest.raises(StudyError, match="'Colour' is not a DICOM keyword"):
        build_study_messages(phantom, "q", tags=("Colour",))
