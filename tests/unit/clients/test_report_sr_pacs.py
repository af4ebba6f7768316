"""The SR stored into a real Orthanc (the `pacs` fixture) by STOW-RS and read back by
WADO-RS: same study, one more series (SR), the references, the answer, the disclaimer and
the model as observer device. A report that fails its check and an unreachable PACS are
one line each, and nothing reaches the PACS."""

from __future__ import annotations

from io import BytesIO

import highdicom as hd
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedSRStorage

from clients.dicomweb import connect
from clients.errors import PacsError
from clients.report_sr import ReportError, StoredReport, build_report_sr, store_sr
from serve.pacs.phantom import phantom_series
from serve.process import free_port
from tests.pacs_fixture import LivePacs, needs_orthanc
from tests.unit.clients.test_report_sr import (
    MODEL,
    TEXT,
    VERSION,
    expected_refs,
    referenced,
    text_of,
)

pytestmark = needs_orthanc
MODALITY = "00080060"


@pytest.fixture(scope="module")
def series(pacs: LivePacs) -> list[Dataset]:
    """The phantom series the PACS holds (the same spec, so the same UIDs)."""
    return phantom_series(pacs.phantom)


def series_modalities(pacs: LivePacs, study_uid: str) -> dict[str, str]:
    """SeriesInstanceUID -> Modality of every series of the study, by QIDO-RS."""
    found = connect(pacs.url).search_for_series(study_uid, fields=[MODALITY])
    return {s["0020000E"]["Value"][0]: s[MODALITY]["Value"][0] for s in found}


def instance_count(pacs: LivePacs) -> int:
    answer = requests.get(f"{pacs.orthanc.url}/statistics", timeout=10)
    answer.raise_for_status()
    return int(answer.json()["CountInstances"])


def test_stored_sr_reads_back_from_the_pacs(pacs: LivePacs, series: list[Dataset]) -> None:
    web = connect(pacs.url)
    study_uid, series_uid = pacs.phantom_study, pacs.phantom_series
    source = [  # what a caller has: instances fetched from the PACS by WADO-RS
        web.retrieve_instance(study_uid, series_uid, ds.SOPInstanceUID) for ds in series[20:40:4]
    ]
    before = series_modalities(pacs, pacs.phantom_study)
    sr = build_report_sr(source, TEXT, model_name=MODEL, model_version=VERSION)
    stored = store_sr(pacs.url, sr)
    assert stored == StoredReport(pacs.phantom_study, sr.SeriesInstanceUID, sr.SOPInstanceUID)

    after = series_modalities(pacs, pacs.phantom_study)
    assert set(after) - set(before) == {sr.SeriesInstanceUID}, (before, after)
    assert after[sr.SeriesInstanceUID] == "SR"

    back = web.retrieve_instance(stored.study_uid, stored.series_uid, stored.instance_uid)
    report = hd.sr.EnhancedSR.from_dataset(back)
    assert report.StudyInstanceUID == series[0].StudyInstanceUID
    assert referenced(report) == expected_refs(source), referenced(report)
    assert text_of(report, "Finding") == TEXT
    assert "not a diagnosis" in text_of(report, "Comment")
    assert text_of(report, "Device Observer Name") == f"{MODEL} {VERSION}"
    assert text_of(report, "Device Observer Model Name") == MODEL
    assert back.PatientID == series[0].PatientID  # the same patient as the study it joins


@pytest.mark.filterwarnings("ignore:A value of type 'str' cannot be assigned")
def test_a_report_that_does_not_encode_never_reaches_the_pacs(
    pacs: LivePacs, series: list[Dataset]
) -> None:
    sr = build_report_sr(series[:2], TEXT, model_name=MODEL)
    sr.add_new(0x00111010, "US", "not a number")  # a value DICOM cannot encode
    count = instance_count(pacs)
    with pytest.raises(ReportError) as info:
        store_sr(pacs.url, sr)
    assert "does not encode as valid DICOM" in str(info.value), info.value
    assert "\n" not in str(info.value)
    assert instance_count(pacs) == count


def test_bad_input_fails_before_the_pacs(pacs: LivePacs, series: list[Dataset]) -> None:
    count = instance_count(pacs)
    for source, text in (([], TEXT), (series[:2], "  ")):
        with pytest.raises(ReportError):
            store_sr(pacs.url, build_report_sr(source, text, model_name=MODEL))
    assert instance_count(pacs) == count


def test_unreachable_pacs_is_one_line(series: list[Dataset]) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    sr = build_report_sr(series[:2], TEXT, model_name=MODEL)
    with pytest.raises(PacsError) as info:
        store_sr(url, sr, timeout_s=5)
    message = str(info.value)
    assert message.startswith(f"cannot reach the PACS at {url}") and "\n" not in message, message


def test_sr_part10_bytes_are_what_the_pacs_holds(pacs: LivePacs, series: list[Dataset]) -> None:
    """Orthanc's own REST copy of the file (not DICOMweb) is the same document."""
    sr = build_report_sr(series[:1], TEXT, model_name=MODEL, model_version=VERSION)
    store_sr(pacs.url, sr)
    found = requests.post(
        f"{pacs.orthanc.url}/tools/find",
        json={"Level": "Instance", "Query": {"SOPInstanceUID": sr.SOPInstanceUID}},
        timeout=10,
    ).json()
    assert len(found) == 1, found
    raw = requests.get(f"{pacs.orthanc.url}/instances/{found[0]}/file", timeout=10)
    raw.raise_for_status()
    back = pydicom.dcmread(BytesIO(raw.content))
    assert back.SOPClassUID == EnhancedSRStorage and back.Modality == "SR"
    assert text_of(back, "Finding") == TEXT
    assert referenced(back) == expected_refs(series[:1])
