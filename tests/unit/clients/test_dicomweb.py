"""clients.dicomweb and `chat/batch --dicomweb` against a real Orthanc (the `pacs` fixture):
WADO-RS fetch of the 60-slice phantom, QIDO-RS search by modality and date, the one-line
errors (unknown UID, unreachable PACS, a study above the image limit), and a resumable
batch over the PACS with the fake OpenAI server (tests/fake_openai.py) as the model (the
model is not under test)."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients import dicomweb
from clients.__main__ import main
from clients.batch import DicomwebStudy, run_items
from clients.chat import MedGemmaClient
from clients.dicomweb import StudyRef, fetch_study, search_studies
from clients.errors import PacsError, StudyError
from clients.limits import Limits
from clients.messages import count_images
from clients.recipes import CT_VOLUME
from clients.study_request import StudyOptions, fetch_request, request_for
from clients.tasks import TASKS
from serve.process import free_port
from tests.fake_openai import serve_fake_openai
from tests.pacs_fixture import LivePacs, needs_orthanc

UNKNOWN = "1.2.826.0.1.3680043.8.498.1"
QIDO_ROW = {  # a QIDO-RS study result as Orthanc answers it (the phantom's)
    "00080020": {"vr": "DA", "Value": ["20240101"]},
    "00080061": {"vr": "CS", "Value": ["CT"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "PHANTOM^CT"}]},
    "00100020": {"vr": "LO", "Value": ["PHANTOM-0001"]},
    "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
    "00201208": {"vr": "IS", "Value": [60]},
}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """`python -m clients ...` in this process (its main()), without the shell's MEDGEMMA_*."""
    for name in [n for n in os.environ if n.startswith("MEDGEMMA_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MEDGEMMA_MAX_RETRIES", "0")

    def run(*args: str, env: dict[str, str] | None = None) -> Run:
        with monkeypatch.context() as m:
            for name, value in (env or {}).items():
                m.setenv(name, value)
            capsys.readouterr()
            code = main(list(args))
            out = capsys.readouterr()
        return Run(code, out.out, out.err)

    return run


def one_error_line(proc: Run) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/dicom-web"


# --- pure ---------------------------------------------------------------------------------


def test_search_filters_are_qido_attributes_with_an_open_date_range():
    since = dicomweb.parse_since("2024-03-05")
    assert since == dicomweb.parse_since("20240305") == datetime.date(2024, 3, 5)
    assert dicomweb.search_filters("ct", since) == {
        "ModalitiesInStudy": "CT",
        "StudyDate": "20240305-",
    }
    assert dicomweb.search_filters(None, None) == {}
    with pytest.raises(ValueError, match="'yesterday' is not a date"):
        dicomweb.parse_since("yesterday")


def test_a_search_result_keeps_no_patient_attribute():
    ref = dicomweb.study_ref(QIDO_ROW)
    assert ref == StudyRef("1.2.3", ("CT",), 60)
    assert "PHANTOM" not in repr(ref) and "2024" not in repr(ref)
    with pytest.raises(PacsError, match="without a StudyInstanceUID"):
        dicomweb.study_ref({"00080061": {"vr": "CS", "Value": ["CT"]}})


# --- a real PACS --------------------------------------------------------------------------


@needs_orthanc
def test_fetch_the_phantom_study_and_its_series(pacs: LivePacs):
    study = fetch_study(pacs.url, pacs.phantom_study)
    ct = [ds for ds in study if ds.Modality == "CT"]
    assert len(ct) == 60 and {ds.SeriesInstanceUID for ds in ct} == {pacs.phantom_series}
    series = fetch_study(pacs.url, pacs.phantom_study, pacs.phantom_series)
    assert sorted(ds.SOPInstanceUID for ds in series) == sorted(ds.SOPInstanceUID for ds in ct)


@needs_orthanc
def test_a_compressed_study_arrives_as_stored_and_is_decoded_here(pacs: LivePacs):
    (j2k,) = [u for u in pacs.study_uids if u.startswith("1.3.6.1.4.1.5962.1.2.8.")]
    (ds,) = fetch_study(pacs.url, j2k)
    assert ds.file_meta.TransferSyntaxUID.name == "JPEG 2000 Image Compression"
    request, sent = request_for([ds], "What is this?")
    assert count_images(request.messages) == 1 and sent.modality == "NM", sent


@needs_orthanc
def test_search_by_modality_and_date_finds_the_phantom(pacs: LivePacs):
    ct = search_studies(pacs.url, modality="CT")
    assert pacs.phantom_study in [r.study_uid for r in ct], ct
    assert all("CT" in r.modalities for r in ct), ct
    phantom = next(r for r in ct if r.study_uid == pacs.phantom_study)
    assert phantom.instances is not None and phantom.instances >= 60, phantom
    mr = [r.study_uid for r in search_studies(pacs.url, modality="MR")]
    assert pacs.phantom_study not in mr and mr, mr
    assert search_studies(pacs.url, since=datetime.date(2100, 1, 1)) == []
    since = [r.study_uid for r in search_studies(pacs.url, since=datetime.date(2024, 1, 1))]
    assert pacs.phantom_study in since, since  # the phantom is dated 2024-01-01


@needs_orthanc
def test_an_unknown_study_or_series_is_one_error_naming_the_uid(pacs: LivePacs):
    with pytest.raises(StudyError, match=f"has no study {UNKNOWN}$"):
        fetch_study(pacs.url, UNKNOWN)
    with pytest.raises(StudyError, match=f"no series {UNKNOWN} in study {pacs.phantom_study}"):
        fetch_study(pacs.url, pacs.phantom_study, UNKNOWN)


def test_an_unreachable_pacs_is_one_error_naming_the_url():
    url = dead_url()
    with pytest.raises(PacsError, match=f"cannot reach the PACS at {url} "):
        fetch_study(url, UNKNOWN)
    with pytest.raises(PacsError, match=f"cannot reach the PACS at {url} "):
        search_studies(url, modality="CT")


@needs_orthanc
def test_the_phantom_becomes_a_sampled_ct_request(pacs: LivePacs):
    options = StudyOptions(max_slices=4, window="soft-tissue", tags=("Modality",))
    limits = Limits(8, None, "server")
    request, sent = fetch_request(pacs.url, pacs.phantom_study, "Any lesion?", options)
    assert (sent.total, sent.indices, sent.window) == (60, (0, 20, 39, 59), "soft-tissue")
    assert count_images(request.messages) == 4
    texts = [p["text"] for p in request.messages[-1]["content"] if p["type"] == "text"]
    assert texts[1:] == ["Modality: CT", "SLICE 1", "SLICE 2", "SLICE 3", "SLICE 4", "Any lesion?"]
    assert texts[0] == CT_VOLUME.instruction, texts
    assert "PHANTOM" not in json.dumps(request.messages)
    _, sent = fetch_request(pacs.url, pacs.phantom_study, "q", limits=limits)
    assert sent.indices == (0, 8, 17, 25, 34, 42, 51, 59), sent
    assert sent.reason.startswith("the server takes at most 8 images per prompt"), sent
    with pytest.raises(ValueError, match="needs a report"):
        fetch_request(pacs.url, pacs.phantom_study, TASKS["summary"], options)


# --- the command line ---------------------------------------------------------------------


@needs_orthanc
def test_chat_bad_input_is_one_line_each(pacs: LivePacs, cli: Callable[..., Run]):
    dead_model = f"http://127.0.0.1:{free_port()}/v1"  # never reached: each fails before
    base = ("chat", "q", "--base-url", dead_model, "--model", "m")
    line = one_error_line(cli(*base, "--dicomweb", pacs.url, "--study", UNKNOWN))
    assert line == f"error: the PACS at {pacs.url} has no study {UNKNOWN}", line
    url = dead_url()
    line = one_error_line(cli(*base, "--dicomweb", url, "--study", UNKNOWN))
    assert line.startswith(f"error: cannot reach the PACS at {url} "), line
    study = ("--dicomweb", pacs.url, "--study", pacs.phantom_study)
    line = one_error_line(cli(*base, "--study", pacs.phantom_study))
    assert line == "error: --study needs --dicomweb: a study is fetched from a PACS by its UID"
    line = one_error_line(cli(*base, *study, "--tags", "PatientName"))
    assert "tag PatientName is not allowed in a prompt" in line, line


@needs_orthanc
@pytest.mark.parametrize(
    ("card", "env", "says"),
    [
        (
            {"max_images_per_prompt": 2, "max_model_len": 4096},
            {},
            ["sent 2 of 60 slices (CT, 3 windows): the server takes at most 2 images per prompt "
             "(one slice per 148 mm of 148 mm; one per 10 mm takes 16"],
        ),
        (
            {},
            {"MEDGEMMA_IMAGE_LIMIT": "2"},
            ["the server publishes no image limit: using --image-limit / MEDGEMMA_IMAGE_LIMIT, "
             "2 images per prompt",
             "sent 2 of 60 slices (CT, 3 windows): --image-limit / MEDGEMMA_IMAGE_LIMIT is 2"],
        ),
        (
            {"max_images_per_prompt": 128, "max_model_len": 4096},
            {},
            ["sent 13 of 60 slices (CT, 3 windows): the server's context of 4096 tokens "
             "(max_model_len) holds 13 images of 256 tokens"],
        ),
    ],
)  # fmt: skip
def test_chat_fits_the_volume_to_the_limits_it_learns_and_says_why(
    pacs: LivePacs, cli: Callable[..., Run], card: dict, env: dict, says: list[str]
):
    with serve_fake_openai() as (url, server):
        server.card = card
        proc = cli(
            "chat", "Describe this CT study", "--base-url", url, "--no-stream",
            "--dicomweb", pacs.url, "--study", pacs.phantom_study, env=env,
        )  # fmt: skip
        posts = [body for method, _, body in server.seen if method == "POST"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    for line in says:
        assert line in proc.stderr, proc.stderr
    (body,) = posts
    assert count_images(body["messages"]) == int(says[-1].split()[1]), proc.stderr
    assert body["temperature"] == 0 and [m["role"] for m in body["messages"]] == ["user"]


@needs_orthanc
@pytest.mark.parametrize(
    ("card", "says"),
    [
        ({"max_images_per_prompt": 0}, "the server takes no images (limit_mm_per_prompt image: 0)"),
        ({"max_model_len": 400}, "not one image fits the server's context: max_model_len 400"),
    ],
)
def test_a_server_that_cannot_take_one_slice_gets_nothing(
    pacs: LivePacs, cli: Callable[..., Run], card: dict, says: str
):
    with serve_fake_openai() as (url, server):
        server.card = card
        proc = cli(
            "chat", "q", "--base-url", url, "--dicomweb", pacs.url, "--study", pacs.phantom_study
        )
        posts = [body for method, _, body in server.seen if method == "POST"]
    line = one_error_line(proc)
    assert says in line and proc.returncode == 1 and posts == [], (line, posts)


@needs_orthanc
def test_chat_sends_the_sampled_series_and_says_what_it_sent(
    pacs: LivePacs, cli: Callable[..., Run]
):
    with serve_fake_openai() as (url, server):
        proc = cli(
            "chat", "Any lesion?", "--base-url", url, "--no-stream",
            "--dicomweb", pacs.url, "--study", pacs.phantom_study, "--max-slices", "3",
        )  # fmt: skip
        posts = [body for method, _, body in server.seen if method == "POST"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "an answer", proc.stdout
    sent = (
        f"sent 3 of 60 slices (CT, 3 windows): --max-slices 3; series {pacs.phantom_series}, "
        f"positions 0, 30, 59"
    )
    assert sent in proc.stderr, proc.stderr
    assert "the server publishes no image limit and none is set" in proc.stderr, proc.stderr
    (body,) = posts
    assert count_images(body["messages"]) == 3, body["messages"][-1]["content"][-1]
    assert "PHANTOM" not in proc.stderr + json.dumps(body)


@needs_orthanc
def test_a_batch_over_the_pacs_writes_one_record_per_study_and_a_rerun_does_nothing(
    pacs: LivePacs, tmp_path: Path, cli: Callable[..., Run]
):
    out = tmp_path / "results.jsonl"
    ct = [r.study_uid for r in search_studies(pacs.url, modality="CT")]
    with serve_fake_openai() as (url, server):
        args = (
            "batch", "--dicomweb", pacs.url, "--modality", "CT", "--max-slices", "2",
            "--out", str(out), "--base-url", url, "--no-progress",
        )  # fmt: skip
        first = cli(*args)
        posts = len([m for m, _, _ in server.seen if m == "POST"])
        again = cli(*args)
        reposts = len([m for m, _, _ in server.seen if m == "POST"]) - posts
    assert first.returncode == 0, first.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(ct), records
    assert all(r["status"] == "ok" and r["text"] == "an answer" for r in records), records
    assert posts == len(ct) and reposts == 0, (posts, reposts)
    assert f"{len(ct)} studies: {len(ct)} already done, 0 ok, 0 failed" in again.stderr


@needs_orthanc
def test_batch_items_build_requests_in_the_run_and_a_dead_pacs_stops_it(
    pacs: LivePacs, tmp_path: Path
):
    out = tmp_path / "results.jsonl"
    options = StudyOptions(max_slices=2)
    items = [DicomwebStudy(pacs.phantom_study, pacs.url, options)]
    dead = [DicomwebStudy(UNKNOWN, dead_url(), options)]
    with serve_fake_openai() as (url, _):
        client = MedGemmaClient(base_url=url, max_retries=0)
        summary = asyncio.run(run_items(client, items, TASKS["findings"], out))
        with pytest.raises(PacsError, match="cannot reach the PACS"):
            asyncio.run(run_items(client, dead, TASKS["findings"], out))
    assert (summary.total, summary.ok, summary.failed) == (1, 1, 0), summary
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["id"] == pacs.phantom_study and record["status"] == "ok", record


@needs_orthanc
def test_chat_store_sr_stores_the_answer_into_the_study(pacs: LivePacs, cli: Callable[..., Run]):
    import highdicom as hd

    from tests.unit.clients.test_report_sr import referenced, text_of

    with serve_fake_openai() as (url, _server):
        proc = cli(
            "chat", "Any lesion?", "--base-url", url, "--no-stream", "--dicomweb", pacs.url,
            "--study", pacs.phantom_study, "--max-slices", "3", "--store-sr",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    stored = re.search(r"report stored: study (\S+), SR series (\S+)", proc.stderr)
    assert stored and stored[1] == pacs.phantom_study, proc.stderr
    (back,) = fetch_study(pacs.url, pacs.phantom_study, stored[2])
    report = hd.sr.EnhancedSR.from_dataset(back)
    assert text_of(report, "Finding") == "an answer"
    assert len(referenced(report)) == 3
    assert {series for _, series, _ in referenced(report)} == {pacs.phantom_series}
    assert "PHANTOM" not in proc.stderr + proc.stdout


def test_store_sr_without_a_study_is_one_line(cli: Callable[..., Run]):
    proc = cli("chat", "Any lesion?", "--base-url", "http://127.0.0.1:9/v1", "--store-sr")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --store-sr needs --dicomweb and --study: the answer goes into that study"
    ), proc.stderr
