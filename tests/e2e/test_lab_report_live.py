"""MedGemma 1.5's lab-report workload end to end against the real vLLM server (tiny
random-weight stand-in, 2 images per prompt, xgrammar structured output).

- The stand-in's answer is random, but structured output holds it to LabReport's grammar:
  it starts as LabReport's JSON and, cut off at --max-tokens, fails the schema. The CLI
  prints that raw answer on stdout and one documented `error:` line; the library raises
  LabReportError holding the same answer.
- With the server made to answer the sample's own JSON (structured output: a fixed choice,
  the model still runs), the answer parses into the sample's results.
- Two pages are two images in one prompt (usage: one image's tokens more than one page).
- Bad input: a blank page, a file that is not a PDF; a batch keeps each failure's reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clients.chat import MedGemmaClient
from clients.lab_report import NOT_A_REPORT, LabReportError, lab_report_request
from tests.e2e.launcher import LiveServer
from tests.lab_pdf import sample_lab_report_pdf
from tests.unit.clients.test_lab_report import COMPACT, SAMPLE_JSON

IMAGE_TOKENS = 256
CUT = "--max-tokens", "16"  # LabReport's shortest JSON is longer: the answer is cut off


def clients_cli(server: LiveServer, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "clients", *argv]
    return subprocess.run(
        cmd, cwd=cwd, env=server.client_env(), capture_output=True, text=True, timeout=300
    )


def errors(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def client(server: LiveServer) -> MedGemmaClient:
    return MedGemmaClient(base_url=server.base_url, api_key=server.api_key, max_retries=0)


def test_the_stand_ins_answer_fails_the_schema_with_the_raw_answer_shown(
    server: LiveServer, tmp_path: Path
) -> None:
    (tmp_path / "report.pdf").write_bytes(sample_lab_report_pdf())
    argv = ["chat", "--task", "lab-report", "--pdf", "report.pdf", *CUT]
    proc = clients_cli(server, tmp_path, *argv)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    (line,) = errors(proc)
    assert line.startswith(f"error: {NOT_A_REPORT}: (root): Invalid JSON: "), line
    assert line.endswith("; the answer was cut off at max_tokens) (the raw answer is above)"), line
    assert "sent page 1 of 1 of report.pdf in one prompt (lab report)" in proc.stderr
    raw = proc.stdout.removesuffix("\n")
    assert raw.startswith('{"laboratory":'), f"structured output shapes the answer: {raw!r}"
    with client(server) as c, pytest.raises(LabReportError) as caught:
        c.read_lab_report(tmp_path / "report.pdf", max_tokens=16)
    assert caught.value.raw == raw, "greedy: the library's answer is the CLI's"


def test_the_samples_own_json_forced_through_the_server_parses(
    server: LiveServer, tmp_path: Path
) -> None:
    answer = f"```json\n{COMPACT}\n```"
    with client(server) as c:
        result = c.read_lab_report(
            sample_lab_report_pdf(),
            constrained=False,
            max_tokens=1024,
            extra_body={"structured_outputs": {"choice": [answer]}},
        )
    assert result.text == answer, result
    assert result.parsed is not None and result.parsed.model_dump() == SAMPLE_JSON
    assert result.usage["prompt_tokens"] >= IMAGE_TOKENS, result.usage


def test_two_pages_are_two_images_in_one_prompt(server: LiveServer) -> None:
    pdf = sample_lab_report_pdf(second_page=True)
    with client(server) as c:
        one = c.send(lab_report_request(pdf, pages=[1], limits=c.limits).request, max_tokens=1)
        two = c.send(lab_report_request(pdf, limits=c.limits).request, max_tokens=1)
    extra = two.usage["prompt_tokens"] - one.usage["prompt_tokens"]
    print(f"\nprompt tokens: page 1 alone {one.usage}, pages 1 and 2 {two.usage}")
    # one more image: its 256 tokens, the few that mark it, and "These 2 images are the
    # pages, in order, of" for "This image is" (20 more of the stand-in's tokens, measured)
    assert IMAGE_TOKENS <= extra <= IMAGE_TOKENS + 32, (one.usage, two.usage)


def test_bad_input_is_one_line_each(server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "blank.pdf").write_bytes(sample_lab_report_pdf(blank_page=True))
    (tmp_path / "page.pdf").write_bytes(b"GIF89a, not a PDF")
    for name, line in (
        ("blank.pdf", "error: blank.pdf: page 2 of 2 is blank: nothing to read"),
        ("page.pdf", "error: page.pdf: not a PDF (no %PDF- header in its first 1024 bytes)"),
    ):
        proc = clients_cli(server, tmp_path, "chat", "--task", "lab-report", "--pdf", name)
        assert proc.returncode == 1 and errors(proc) == [line], proc.stderr
        assert proc.stdout == "", "nothing was sent, so no answer is printed"


def test_batch_keeps_each_reports_answer_or_reason(server: LiveServer, tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "report.pdf").write_bytes(sample_lab_report_pdf(second_page=True))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is no PDF\n")
    (folder / "notes.txt").write_text("not a report: not picked up")
    out = tmp_path / "labs.jsonl"
    proc = clients_cli(
        server, tmp_path, "batch", "reports", "--task", "lab-report", "--out", str(out),
        "--no-progress", *CUT,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"2 studies: 0 already done, 0 ok, 2 failed in ", proc.stderr), proc.stderr
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"report.pdf", "broken.pdf"}, rows
    report, broken = rows["report.pdf"], rows["broken.pdf"]
    assert report["error_type"] == "LabReportError", report
    assert report["text"].startswith('{"laboratory":'), "the raw answer is kept"
    assert broken["error_type"] == "DocumentError" and "PDFium cannot open" in broken["error"]
