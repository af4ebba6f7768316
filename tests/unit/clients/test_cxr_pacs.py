"""The chest X-ray pair in a real Orthanc (the `pacs` fixture): --prior auto finds the
prior by QIDO-RS; the bad inputs (no earlier study, a prior of another modality, a prior
that is no study, localize without --object) are one `error:` line each, exit 1, no patient
identifier printed, and the PACS untouched. None of them reaches the model server (the
client points at a port where nothing listens)."""

from __future__ import annotations

import pytest
import requests

from clients.__main__ import main
from clients.prior import find_prior
from clients.study_request import fetch
from serve.pacs.radiograph import PATIENT_ID, PATIENT_NAME
from serve.process import free_port
from tests.pacs_fixture import LivePacs, needs_orthanc

pytestmark = needs_orthanc


def instance_count(pacs: LivePacs) -> int:
    answer = requests.get(f"{pacs.orthanc.url}/statistics", timeout=10)
    answer.raise_for_status()
    return int(answer.json()["CountInstances"])


def test_prior_auto_finds_the_earlier_study_of_the_patient(pacs: LivePacs) -> None:
    # the DX image (another test may have stored a report, an SR, into the study)
    (current,) = [d for d in fetch(pacs.url, pacs.cxr_current_study, None) if d.Modality == "DX"]
    assert find_prior(pacs.url, current) == pacs.cxr_prior_study


def run(pacs: LivePacs, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    nowhere = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: no model is asked
    before = instance_count(pacs)
    code = main(["chat", "--base-url", nowhere, "--retries", "0", "--dicomweb", pacs.url, *argv])
    err = capsys.readouterr().err
    assert instance_count(pacs) == before  # the PACS untouched
    for identifier in (PATIENT_ID, PATIENT_NAME, "PHANTOM"):
        assert identifier not in err, err
    return code, err


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ("--study", "PRIOR", "--prior", "auto", "Any change?"),
            "error: --prior auto: the PACS at {url} holds no earlier DX study of this patient",
        ),
        (
            ("--study", "CURRENT", "--prior-study", "CT", "Any change?", "--store-sr"),
            "error: the prior study is CT, not a chest radiograph (CR or DX)",
        ),
        (
            ("--study", "CURRENT", "--prior-study", "1.2.3.4", "Any change?"),
            "error: the PACS at {url} has no study 1.2.3.4",
        ),
        (
            ("--study", "CURRENT", "--task", "localize", "--store-sr"),
            "error: --task localize needs --object NAME",
        ),
        (
            ("--study", "CT", "--task", "localize", "--object", "heart", "--store-sr"),
            "error: the study is CT, not a chest radiograph",
        ),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_pacs_untouched(
    pacs: LivePacs, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], line: str
) -> None:
    uids = {"PRIOR": pacs.cxr_prior_study, "CURRENT": pacs.cxr_current_study}
    uids["CT"] = pacs.phantom_study
    code, err = run(pacs, capsys, *(uids.get(a, a) for a in argv))
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line.format(url=pacs.url)), err


def test_prior_auto_after_a_report_was_stored_into_the_current_study(pacs: LivePacs) -> None:
    """A stored report is an SR instance in the current study; the prior is still found by
    the radiograph's modality (the SR came first in the study once, and auto searched for
    an earlier SR study: none)."""
    from clients.cxr_client import AUTO, compare_request
    from clients.report_sr import build_report_sr, store_sr

    images = [d for d in fetch(pacs.url, pacs.cxr_current_study, None) if d.Modality == "DX"]
    store_sr(pacs.url, build_report_sr(images, "No change.", model_name="test"))
    current = fetch(pacs.url, pacs.cxr_current_study, None)
    assert {d.Modality for d in current} == {"DX", "SR"}
    current.sort(key=lambda d: d.Modality != "SR")  # the SR first, as a PACS may list it
    assert find_prior(pacs.url, current[-1]) == pacs.cxr_prior_study
    comparison = compare_request(pacs.url, pacs.cxr_current_study, "Any change?", AUTO)
    assert comparison.sent.prior_study == pacs.cxr_prior_study, comparison.sent
