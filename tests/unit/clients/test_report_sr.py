"""The answer as an Enhanced SR (pure): built from the CT phantom, it sits in the source's
study, references exactly the instances given (or those build_study_messages sent), carries
the answer, the disclaimer and the model as observer device, and survives Part 10 encoding;
bad input is one line naming the problem, without patient attributes."""

from __future__ import annotations

import random
import shutil
import subprocess
import warnings
from io import BytesIO
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from clients.report_sr import (
    ReportError,
    build_report_sr,
    device_uid,
    encode,
    sent_instances,
)
from clients.study import Sent, build_study_messages
from serve.pacs.phantom import PATIENT_ID, PATIENT_NAME, PhantomSpec, phantom_series

SPEC = PhantomSpec(slices=12, size=32)
TEXT = "A round lesion of about 24 mm, ≈ +60 HU, in the soft tissue between the lungs."
MODEL, VERSION = "google/medgemma-4b-it", "2025-05-20"


@pytest.fixture(scope="module")
def series() -> list[Dataset]:
    return phantom_series(SPEC)


def items(sr: Dataset) -> dict[str, list[Dataset]]:
    """The root's content items by concept name meaning."""
    found: dict[str, list[Dataset]] = {}
    for item in sr.ContentSequence:
        found.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item)
    return found


def text_of(sr: Dataset, meaning: str) -> str:
    (item,) = items(sr)[meaning]
    return str(item.TextValue)


def referenced(sr: Dataset) -> set[tuple[str, str, str]]:
    """(study, series, instance) of every instance in the evidence sequence."""
    refs = set()
    for study in sr.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            for sop in series.ReferencedSOPSequence:
                refs.add(
                    (
                        str(study.StudyInstanceUID),
                        str(series.SeriesInstanceUID),
                        str(sop.ReferencedSOPInstanceUID),
                    )
                )
    return refs


def expected_refs(source: list[Dataset]) -> set[tuple[str, str, str]]:
    return {(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in source}


def test_sr_in_the_source_study_referencing_the_given_instances(series: list[Dataset]) -> None:
    source = series[3:9]
    sr = build_report_sr(source, TEXT, model_name=MODEL, model_version=VERSION)
    assert isinstance(sr, hd.sr.EnhancedSR)
    assert sr.StudyInstanceUID == series[0].StudyInstanceUID
    assert sr.SeriesInstanceUID != series[0].SeriesInstanceUID
    assert sr.Modality == "SR"
    assert referenced(sr) == expected_refs(source), referenced(sr)
    assert "PertinentOtherEvidenceSequence" not in sr
    assert (sr.PatientName, sr.PatientID) == (PATIENT_NAME, PATIENT_ID)
    assert (sr.PreliminaryFlag, sr.VerificationFlag) == ("PRELIMINARY", "UNVERIFIED")


def test_sr_carries_the_answer_the_disclaimer_and_the_model(series: list[Dataset]) -> None:
    sr = build_report_sr(series, f"  {TEXT}\n", model_name=MODEL, model_version=VERSION)
    assert sr.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    assert text_of(sr, "Finding") == TEXT
    comment = text_of(sr, "Comment")
    assert "machine learning model" in comment and "not a diagnosis" in comment, comment
    assert MODEL in comment and VERSION in comment, comment
    assert items(sr)["Observer Type"][0].ConceptCodeSequence[0].CodeMeaning == "Device"
    assert text_of(sr, "Device Observer Name") == f"{MODEL} {VERSION}"
    assert text_of(sr, "Device Observer Model Name") == MODEL
    (uid_item,) = items(sr)["Device Observer UID"]
    assert str(uid_item.UID) == device_uid(MODEL, VERSION)
    assert (text_of(sr, "Algorithm Name"), text_of(sr, "Algorithm Version")) == (MODEL, VERSION)
    for meaning in ("Observer Type", "Device Observer Name", "Device Observer UID"):
        assert items(sr)[meaning][0].RelationshipType == "HAS OBS CONTEXT"


def test_without_a_version_the_model_name_alone(series: list[Dataset]) -> None:
    sr = build_report_sr(series[:1], TEXT, model_name=MODEL, model_version=None)
    assert text_of(sr, "Device Observer Name") == MODEL
    assert text_of(sr, "Algorithm Version") == "unspecified"


def test_device_uid_is_stable_per_model_and_version() -> None:
    assert device_uid(MODEL, VERSION) == device_uid(MODEL, VERSION)
    assert device_uid(MODEL, VERSION) != device_uid(MODEL, "other")
    assert device_uid(MODEL, None) != device_uid("google/medgemma-27b-it", None)
    assert pydicom.uid.UID(device_uid(MODEL, VERSION)).is_valid


def test_encoded_sr_reads_back_with_the_same_content(series: list[Dataset]) -> None:
    sr = build_report_sr(series[:4], TEXT, model_name=MODEL, model_version=VERSION)
    back = hd.sr.srread(BytesIO(encode(sr)))
    assert isinstance(back, hd.sr.EnhancedSR)
    assert back.SOPInstanceUID == sr.SOPInstanceUID
    assert text_of(back, "Finding") == TEXT  # non-ASCII survives (UTF-8 character set)
    assert referenced(back) == expected_refs(series[:4])
    assert {e[2] for e in back.get_evidence()} == {ds.SOPInstanceUID for ds in series[:4]}


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK's dsrdump is not installed")
def test_dcmtk_reads_the_sr_as_a_valid_enhanced_sr(series: list[Dataset], tmp_path: Path) -> None:
    """DCMTK checks the document's structure and the Enhanced SR relationship constraints."""
    path = tmp_path / "report.dcm"
    model = build_report_sr(series[:3], TEXT, model_name=MODEL, model_version=VERSION)
    path.write_bytes(encode(model))
    done = subprocess.run(["dsrdump", "+Pl", str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in done.stderr.splitlines() if line.startswith(("E:", "F:"))]
    assert done.returncode == 0 and not errors, done.stderr
    assert done.stdout.lstrip().startswith("Enhanced SR Document"), done.stdout
    assert '<contains TEXT:(,,"Comment")=' in done.stdout, done.stdout
    assert f'"Device Observer Name")="{MODEL} {VERSION}"' in done.stdout, done.stdout


def test_an_instance_given_twice_is_referenced_once(series: list[Dataset]) -> None:
    sr = build_report_sr([series[0], series[1], series[0]], TEXT, model_name=MODEL)
    sops = [
        s.ReferencedSOPInstanceUID
        for st in sr.CurrentRequestedProcedureEvidenceSequence
        for se in st.ReferencedSeriesSequence
        for s in se.ReferencedSOPSequence
    ]
    assert sorted(sops) == sorted([series[0].SOPInstanceUID, series[1].SOPInstanceUID])


def test_missing_type2_patient_attributes_are_left_empty(series: list[Dataset]) -> None:
    first = pydicom.dcmread(BytesIO(encode_part10(series[0])))
    for keyword in ("PatientBirthDate", "AccessionNumber", "ReferringPhysicianName"):
        delattr(first, keyword)
    sr = build_report_sr([first], TEXT, model_name=MODEL)
    for keyword in ("PatientBirthDate", "AccessionNumber"):
        assert keyword in sr and not sr[keyword].value, sr[keyword]  # present, empty (Type 2)
    assert "PatientBirthDate" not in first  # the source is not changed


def encode_part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_sent_instances_are_those_behind_the_images_sent(series: list[Dataset]) -> None:
    shuffled = list(series)
    random.Random(1).shuffle(shuffled)
    _, sent = build_study_messages(shuffled, "what?", budget=4, max_size=64)
    chosen = sent_instances(shuffled, sent)
    # the phantom runs along +z in InstanceNumber order, so ordered position i is series[i]
    assert [ds.SOPInstanceUID for ds in chosen] == [series[i].SOPInstanceUID for i in sent.indices]
    assert len(chosen) == 4
    sr = build_report_sr(chosen, TEXT, model_name=MODEL)
    assert referenced(sr) == expected_refs(chosen)


def test_frames_of_a_multiframe_object_are_one_instance() -> None:
    path = get_testdata_file("examples_ybr_color.dcm", download=False)
    assert path is not None
    cine = pydicom.dcmread(path)
    sent = Sent(cine.SeriesInstanceUID, cine.Modality, int(cine.NumberOfFrames), (0, 10, 29), "voi")
    (chosen,) = sent_instances([cine], sent)
    sr = build_report_sr([chosen], TEXT, model_name=MODEL)
    assert referenced(sr) == expected_refs([cine])


def test_no_warning_quotes_a_patient_attribute(series: list[Dataset]) -> None:
    """highdicom warns about a one-part patient name, quoting it: silenced."""
    source = pydicom.dcmread(BytesIO(encode_part10(series[0])))
    source.PatientName = "SECRETNAME"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encode(build_report_sr([source], TEXT, model_name=MODEL))
    assert not [w for w in caught if "SECRETNAME" in str(w.message)], [
        str(w.message) for w in caught
    ]


def other_study() -> Dataset:
    path = get_testdata_file("CT_small.dcm", download=False)
    assert path is not None
    return pydicom.dcmread(path)


def without_sop_uid(ds: Dataset) -> Dataset:
    copy = pydicom.dcmread(BytesIO(encode_part10(ds)))
    del copy.file_meta.MediaStorageSOPInstanceUID
    del copy.SOPInstanceUID
    return copy


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("empty text", "the answer is empty"),
        ("blank text", "the answer is empty"),
        ("no sources", "no source instances"),
        ("two studies", "come from 2 studies"),
        ("no SOP instance UID", "has no SOPInstanceUID"),
        ("no model name", "no model name"),
    ],
)
def test_bad_input_is_one_line(series: list[Dataset], case: str, expected: str) -> None:
    source, text, model = series[:3], TEXT, MODEL
    if case == "empty text":
        text = ""
    elif case == "blank text":
        text = " \n\t"
    elif case == "no sources":
        source = []
    elif case == "two studies":
        source = [*series[:2], other_study()]
    elif case == "no SOP instance UID":
        source = [series[0], without_sop_uid(series[1])]
    elif case == "no model name":
        model = " "
    with pytest.raises(ReportError) as info:
        build_report_sr(source, text, model_name=model)
    message = str(info.value)
    assert expected in message and "\n" not in message, message
    assert PATIENT_NAME not in message and PATIENT_ID not in message, message
    assert series[0].StudyInstanceUID not in message, message
