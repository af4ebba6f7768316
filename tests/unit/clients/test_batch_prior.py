"""`batch --dicomweb URL --prior auto`: each study found sent with its prior (the chest X-ray
pair in a real Orthanc, the `pacs` fixture), the answers from the fake OpenAI server (the
model is what these tests are not about): the current study's record names its prior and
its request carries the prior's image, then the current's, then the question; the prior
study, which has no earlier one, is an error record with the clear line and the run goes
on; no patient identifier in a prompt, on stderr or in the JSONL. The flags' checks are pure."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from clients.__main__ import build_parser, main
from clients.batch import DicomwebStudy, run_items
from clients.chat import MedGemmaClient
from clients.cxr import COMPARE_QUESTION, Compare, Localize, image_part, radiograph
from clients.cxr_cli import batch_task
from clients.lab_report import LabReportTask
from clients.study_request import fetch
from clients.tasks import TASKS
from serve.pacs.radiograph import PATIENT_ID, PATIENT_NAME
from tests.fake_openai import serve_fake_openai
from tests.pacs_fixture import LivePacs, needs_orthanc

URL = "http://127.0.0.1:8042/dicom-web"  # never asked: the flags are checked first
NO_EARLIER = (
    "--prior auto: the PACS at {url} holds no earlier DX study of this patient: nothing to "
    "compare this study with (the batch goes on with the others)"
)


def task_of(*argv: str) -> object:
    return batch_task(build_parser().parse_args(["batch", *argv]))


def test_prior_auto_is_a_comparison_with_the_default_or_given_question() -> None:
    assert task_of("--dicomweb", URL, "--prior", "auto") == Compare(COMPARE_QUESTION)
    given = task_of("--dicomweb", URL, "--prior", "auto", "--question", " What  changed? ")
    assert given == Compare("What changed?")
    assert task_of("studies") == TASKS["findings"]  # the default task is unchanged
    assert task_of("reports", "--task", "lab-report") == LabReportTask()
    assert task_of("studies", "--task", "localize", "--object", "heart") == Localize("heart")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (("--dicomweb", URL, "--prior", "auto", "--task", "findings"), "no --task or --object"),
        (("--dicomweb", URL, "--prior", "auto", "--object", "heart"), "no --task or --object"),
        (("studies", "--prior", "auto"), "compares studies in a PACS: give --dicomweb URL"),
        (("--dicomweb", URL, "--prior", "auto", "--question", "  "), "--question is empty"),
        (("--dicomweb", URL, "--question", "Any change?"), "--question is for --prior auto"),
        (("reports", "--task", "lab-report", "--object", "x"), "--object is for --task localize"),
    ],
)
def test_conflicting_flags_are_one_clear_line(argv: tuple[str, ...], line: str) -> None:
    with pytest.raises(ValueError, match=line.replace("?", r"\?")):
        task_of(*argv)


def test_prior_takes_only_auto(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["batch", "--dicomweb", URL, "--prior", "1.2.3"])
    assert "invalid choice: '1.2.3'" in capsys.readouterr().err


@needs_orthanc
def test_each_study_goes_with_its_prior_and_one_without_is_an_error_record(
    pacs: LivePacs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDGEMMA_MODEL", raising=False)
    out = tmp_path / "pairs.jsonl"
    items = [DicomwebStudy(uid, pacs.url) for uid in (pacs.cxr_prior_study, pacs.cxr_current_study)]
    with serve_fake_openai() as (url, server):
        client = MedGemmaClient(base_url=url, max_retries=0)
        summary = asyncio.run(run_items(client, items, Compare("Any change?"), out))
        posts = [body for method, _, body in server.seen if method == "POST"]
    assert (summary.ok, summary.failed) == (1, 1), summary
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    current, prior = records[pacs.cxr_current_study], records[pacs.cxr_prior_study]
    assert current["status"] == "ok" and current["task"] == "compare", current
    assert current["prior"] == pacs.cxr_prior_study and current["text"] == "an answer", current
    assert prior["status"] == "error" and prior["error_type"] == "StudyError", prior
    assert prior["error"] == NO_EARLIER.format(url=pacs.url), prior
    (body,) = posts  # the prior study was never sent
    assert body["temperature"] == 0.0 and body["max_tokens"] == 600, body
    (turn,) = body["messages"]
    expected = [
        image_part(radiograph(fetch(pacs.url, uid, None), None, "the").pixels, 896)
        for uid in (pacs.cxr_prior_study, pacs.cxr_current_study)
    ]
    assert turn["content"] == [*expected, {"type": "text", "text": "Any change?"}]
    for identifier in (PATIENT_ID, PATIENT_NAME, "PHANTOM"):
        assert identifier not in json.dumps(body) + out.read_text()


@needs_orthanc
def test_the_command_line_runs_the_dx_studies_and_exits_1_for_the_one_without_a_prior(
    pacs: LivePacs,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("MEDGEMMA_")]:
        monkeypatch.delenv(name)
    out = tmp_path / "compare.jsonl"
    with serve_fake_openai() as (url, _):
        code = main(
            ["batch", "--dicomweb", pacs.url, "--modality", "DX", "--prior", "auto",
             "--out", str(out), "--base-url", url, "--retries", "0", "--no-progress"]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1, err  # one study failed: the run says so, after writing every record
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records[pacs.cxr_current_study]["prior"] == pacs.cxr_prior_study, records
    assert records[pacs.cxr_prior_study]["error"] == NO_EARLIER.format(url=pacs.url), records
    assert " failed in " in err and "Traceback" not in err, err
    for identifier in (PATIENT_ID, PATIENT_NAME, "PHANTOM"):
        assert identifier not in err + out.read_text(), err
