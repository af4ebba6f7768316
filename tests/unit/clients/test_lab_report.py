"""Lab-report extraction's pure parts: the request (pages, instruction, schema, structured
output, the server's limits) and the answer read into a LabReport from the formats a model
answers in (plain JSON, a ```json fence, a thinking trace first), or refused with the raw
answer kept; and `chat --task lab-report` with the answer fixed (the server is not what
these tests are about: tests/e2e/test_lab_report_live.py asks the real one)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clients.__main__ import build_parser, main
from clients.lab_report import (
    NOT_A_REPORT,
    LabReport,
    LabReportError,
    lab_prompt,
    lab_report_request,
    parse_lab_report,
)
from clients.lab_report_cli import cmd_lab_report
from clients.limits import Limits
from clients.pages import DocumentError
from clients.results import ChatResult
from clients.tasks import TaskRequest
from tests.lab_pdf import sample_lab_report_pdf

SERVER = Limits(2, 4096, "server")  # what cpu-tiny publishes: 2 images, 4096 tokens
SAMPLE_JSON = {  # what the sample PDF's page 1 holds, as LabReport
    "laboratory": "MEDGEMMA-SERVE SAMPLE LABORATORY",
    "specimen": "Serum (venous blood)",
    "collection_time": "2026-11-30 08:15",
    "report_time": "2026-11-30 14:02",
    "results": [
        {"test_name": "Sodium", "result": "139", "unit": "mmol/L",
         "reference_range": "135-145", "flag": None, "specimen": None, "collection_time": None},
        {"test_name": "Potassium", "result": "5.9", "unit": "mmol/L",
         "reference_range": "3.5-5.1", "flag": "H", "specimen": None, "collection_time": None},
        {"test_name": "C-reactive protein", "result": "<5", "unit": "mg/L",
         "reference_range": "<5", "flag": None, "specimen": None, "collection_time": None},
    ],
}  # fmt: skip
COMPACT = json.dumps(SAMPLE_JSON, separators=(",", ":"))  # as xgrammar writes it


def test_one_page_is_one_image_then_the_instruction_with_the_schema() -> None:
    lab = lab_report_request(sample_lab_report_pdf(), limits=SERVER)
    (turn,) = lab.request.messages  # no system prompt
    assert turn["role"] == "user"
    image, text = turn["content"]
    assert image["type"] == "image_url" and text["type"] == "text"
    assert text["text"] == lab_prompt(1)
    assert text["text"].startswith("This image is a laboratory report. Extract every test")
    assert "Leave out the patient's name and identifiers." in text["text"]
    assert text["text"].endswith(
        'Answer with JSON only, in this shape: {"laboratory": string or null, "specimen": '
        'string or null, "collection_time": string or null, "report_time": string or null, '
        '"results": [{"test_name": string, "result": string, "unit": string or null, '
        '"reference_range": string or null, "flag": string or null, "specimen": string or '
        'null, "collection_time": string or null}, ...]}'
    )
    url = image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert max(sent.size) == 896 and sent.mode == "L", sent  # Letter at 896 px, grey
    assert lab.line() == "sent page 1 of 1 of <bytes> in one prompt (lab report)"


def test_structured_output_asks_for_the_lab_report_schema_greedy() -> None:
    params = lab_report_request(sample_lab_report_pdf(), limits=SERVER).request.params
    assert params["max_tokens"] == 2048 and params["temperature"] == 0.0
    fmt = params["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "LabReport"
    assert fmt["json_schema"]["schema"] == LabReport.model_json_schema()
    assert fmt["json_schema"]["strict"] is True
    free = lab_report_request(
        sample_lab_report_pdf(), limits=SERVER, constrained=False, max_tokens=99
    ).request.params
    assert "response_format" not in free and free["max_tokens"] == 99


def test_every_field_is_required_and_nullable_and_none_is_the_patients() -> None:
    schema = LabReport.model_json_schema()
    result = schema["$defs"]["LabResult"]
    assert set(result["required"]) == {
        "test_name", "result", "unit", "reference_range", "flag", "specimen", "collection_time",
    }  # fmt: skip
    assert set(schema["required"]) == {
        "laboratory", "specimen", "collection_time", "report_time", "results",
    }  # fmt: skip
    assert all("description" in f for f in [*result["properties"].values()])
    names = [*schema["properties"], *result["properties"]]
    assert not [n for n in names if "patient" in n or "name" in n and n != "test_name"], names


def test_pages_go_in_page_order_in_one_prompt(tmp_path: Path) -> None:
    lab = lab_report_request(sample_lab_report_pdf(second_page=True), limits=SERVER)
    content = lab.request.messages[0]["content"]
    assert [p["type"] for p in content] == ["image_url", "image_url", "text"]
    assert content[2]["text"].startswith("These 2 images are the pages, in order, of a lab")
    assert lab.line() == "sent pages 1, 2 of 2 of <bytes> in one prompt (lab report)"
    only = lab_report_request(sample_lab_report_pdf(second_page=True), pages=[2], limits=SERVER)
    assert (only.pages, only.total) == ((2,), 2)


def test_more_pages_than_the_server_takes_are_refused_before_anything_is_sent() -> None:
    three = sample_lab_report_pdf(second_page=True, blank_page=True)
    with pytest.raises(DocumentError) as caught:
        lab_report_request(three, limits=SERVER)
    assert str(caught.value) == (
        "<bytes>: 3 pages do not fit one prompt (the server takes at most 2 images per "
        "prompt): send at most 2 with --page N (repeatable); nothing sent"
    )
    assert lab_report_request(three, pages=[1, 2], limits=SERVER).pages == (1, 2)


def test_the_answer_as_xgrammar_writes_it_parses() -> None:
    report = parse_lab_report(COMPACT, "stop")
    assert report.model_dump() == SAMPLE_JSON
    assert report.results[1].flag == "H" and report.results[2].result == "<5"


def test_a_fenced_answer_with_words_around_it_parses() -> None:
    answer = f"Here are the results.\n```json\n{json.dumps(SAMPLE_JSON, indent=2)}\n```\nDone."
    assert parse_lab_report(answer).model_dump() == SAMPLE_JSON


def test_a_thinking_trace_is_skipped_even_with_json_in_it() -> None:
    trace = '<unused94>thought\nThe table has 3 rows; maybe ```json{"results": []}``` first?'
    answer = f"{trace}<unused95>```json{COMPACT}```"
    assert parse_lab_report(answer).model_dump() == SAMPLE_JSON


@pytest.mark.parametrize(
    ("answer", "finish", "why"),
    [
        (COMPACT[:57], "length", "(root): Invalid JSON: EOF while parsing a string at line 1 "
         "column 57 (1 error(s); the answer was cut off at max_tokens)"),
        ("No results could be read.", "stop", "(root): Invalid JSON: expected ident at line 1 "
         "column 2 (1 error(s))"),
        (COMPACT.replace('"unit":"mmol/L",', "", 1), "stop",
         "results.0.unit: Field required (1 error(s))"),
        (COMPACT.replace('"flag":"H"', '"flag":"H","patient":"X"'), "stop",
         "results.1.patient: Extra inputs are not permitted (1 error(s))"),
        ('{"results": "none"}', "stop", "laboratory: Field required (5 error(s))"),
        ("<unused94>thought\nThe table has", "length",
         "its thinking trace never ends (<unused94> without <unused95>)"),
    ],
    ids=["cut-off", "prose", "missing-field", "patient-field", "wrong-types", "endless-thought"],
)  # fmt: skip
def test_an_answer_that_is_not_a_lab_report_keeps_the_raw_answer(
    answer: str, finish: str, why: str
) -> None:
    with pytest.raises(LabReportError) as caught:
        parse_lab_report(answer, finish)
    assert str(caught.value) == f"{NOT_A_REPORT}: {why}"
    assert caught.value.raw == answer


class FixedAnswer:
    """A server stand-in answering `answer`; keeps what it was sent."""

    def __init__(self, answer: str, finish: str = "stop") -> None:
        self.answer, self.finish = answer, finish
        self.requests: list[TaskRequest] = []

    def limits(self) -> Limits:
        return SERVER

    def send(self, request: TaskRequest, **params: Any) -> ChatResult:
        self.requests.append(request)
        return ChatResult(self.answer, self.finish, {"prompt_tokens": 1300}, 0.1, "m")


def write_sample(tmp_path: Path) -> Path:
    path = tmp_path / "report.pdf"
    path.write_bytes(sample_lab_report_pdf())
    return path


def test_chat_prints_the_report_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pdf = write_sample(tmp_path)
    args = build_parser().parse_args(["chat", "--task", "lab-report", "--pdf", str(pdf)])
    model = FixedAnswer(f"```json\n{COMPACT}\n```")
    assert cmd_lab_report(args, model) == 0  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert json.loads(out) == SAMPLE_JSON
    assert f"sent page 1 of 1 of {pdf} in one prompt (lab report)" in err
    assert len(model.requests) == 1


def test_chat_shows_the_raw_answer_then_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(
        ["chat", "--task", "lab-report", "--pdf", str(write_sample(tmp_path))]
    )
    with pytest.raises(LabReportError) as caught:
        cmd_lab_report(args, FixedAnswer('{"laboratory": "abc', "length"))  # type: ignore[arg-type]
    assert str(caught.value).endswith("(the raw answer is above)")
    assert str(caught.value).startswith(f"{NOT_A_REPORT}: (root): Invalid JSON: EOF")
    assert capsys.readouterr().out == '{"laboratory": "abc\n'


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--pdf", "{png}"], "error: {png}: not a PDF (no %PDF- header in its first 1024 bytes)"),
        (["--pdf", "{missing}"], "error: {missing}: no such file"),
        (["--pdf", "{pdf}", "--page", "3"], "error: {pdf} has 1 page(s): no page 3 (pages count "
         "from 1)"),
        (["--pdf", "{pdf}", "--image", "{png}"], "error: --task lab-report takes --pdf PATH or "
         "--image PATH, not both"),
        ([], "error: --task lab-report needs the report: --pdf PATH or --image PATH"),
        (["--task", "findings", "--pdf", "{pdf}"], "error: --pdf and --page are for --task "
         "lab-report"),
    ],
    ids=["png-as-pdf", "missing", "no-such-page", "both", "neither", "another-task"],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_1_before_any_server_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], line: str
) -> None:
    """No server runs here: each of these fails before the client asks one."""
    names = {
        "png": str(tmp_path / "page.pdf"),
        "missing": str(tmp_path / "nowhere.pdf"),
        "pdf": str(write_sample(tmp_path)),
    }
    Image.new("L", (10, 10)).save(names["png"], "PNG")
    argv = [a.format(**names) for a in argv]
    task = [] if "--task" in argv else ["--task", "lab-report"]
    code = main(["chat", *task, "--base-url", "http://127.0.0.1:9/v1", *argv])
    err = capsys.readouterr().err
    assert code == 1 and err == line.format(**names) + "\n", err
