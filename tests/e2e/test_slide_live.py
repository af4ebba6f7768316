"""A whole slide from the real PACS (the `pacs` fixture's Orthanc, with the synthetic slide
of `make pacs`) to the session's real vLLM server (tiny stand-in, 2 images per prompt, a
context of 4096): MedGemma 1.5's pathology recipe, fitted to what the server publishes.

- `chat --dicomweb URL --study SLIDE --store-sr`: the 10X level's 7 tissue patches found,
  2 sent (the server's limit, said on stderr), the first and the last in spatial order; the
  prompt holds two images' tokens; the answer goes into the study as an SR referencing the
  10X level's instance.
- The same through MedGemmaClient (ask_slide, ask_study) and `batch --dicomweb --modality SM`.
- Bad input, one line and exit 1, nothing stored: a blank slide (no tissue), a CT study
  where a slide is expected.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pytest
import requests

from clients.chat import MedGemmaClient
from clients.dicomweb import fetch_study
from clients.errors import StudyError
from clients.slide import SlideSent
from serve.pacs import slide
from serve.pacs.samples import load
from tests.conftest import REPO
from tests.e2e.launcher import LiveServer
from tests.pacs_fixture import LivePacs, needs_orthanc
from tests.unit.clients.test_report_sr import referenced

pytestmark = needs_orthanc
IMAGE_TOKENS = 256
QUESTION = "Describe the tissue on this slide."
TISSUE = sorted(slide.SLIDE.tissue)  # the 7 tissue patches at 10X, in spatial order


def clients_cli(server: LiveServer, *argv: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "clients", *argv]
    return subprocess.run(
        cmd, cwd=REPO, env=server.client_env(), capture_output=True, text=True, timeout=300
    )


def instance_count(pacs: LivePacs) -> int:
    answer = requests.get(f"{pacs.orthanc.url}/statistics", timeout=10)
    answer.raise_for_status()
    return int(answer.json()["CountInstances"])


@pytest.fixture()
def blank_slide(pacs: LivePacs) -> Iterator[str]:
    """A slide of glass only, stored for the test and deleted after it (other tests search
    the PACS for SM studies)."""
    (study,) = load(pacs.url, slide.slide_pyramid(slide.BLANK))
    try:
        yield study
    finally:
        found = requests.post(f"{pacs.orthanc.url}/tools/lookup", data=study, timeout=10)
        for hit in found.json():
            requests.delete(f"{pacs.orthanc.url}/studies/{hit['ID']}", timeout=10)


def test_chat_sends_tissue_patches_fitted_to_the_server_and_stores_the_answer(
    server: LiveServer, pacs: LivePacs
) -> None:
    proc = clients_cli(
        server, "chat", QUESTION, "--no-stream", "--max-tokens", "8",
        "--dicomweb", pacs.url, "--study", pacs.slide_study, "--store-sr",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (first, *_, last) = TISSUE
    line = (
        f"sent 2 of 7 patches (10X): the server takes at most 2 images per prompt; series "
        f"{slide.uid(slide.SLIDE, 'series')}, level 1 (3584 x 2688 px), patches (row,col) "
        f"{first[0]},{first[1]} {last[0]},{last[1]}"
    )
    assert line in proc.stderr, proc.stderr
    found = re.search(r"'prompt_tokens': (\d+)", proc.stderr)
    assert found and int(found[1]) >= 2 * IMAGE_TOKENS, proc.stderr
    stored = re.search(r"report stored: study (\S+), SR series (\S+)", proc.stderr)
    assert stored and stored[1] == pacs.slide_study, proc.stderr
    (back,) = fetch_study(pacs.url, pacs.slide_study, stored[2])
    report = hd.sr.EnhancedSR.from_dataset(back)
    level_10x = str(slide.uid(slide.SLIDE, "slice-1"))
    assert {uid for _, _, uid in referenced(report)} == {level_10x}
    assert "PHANTOM" not in proc.stderr + proc.stdout  # no patient name printed


def test_the_client_library_and_batch_read_the_slide(
    server: LiveServer, pacs: LivePacs, tmp_path: Path
) -> None:
    with MedGemmaClient(base_url=server.base_url, api_key=server.api_key, max_retries=0) as c:
        one = c.ask_slide(pacs.url, pacs.slide_study, QUESTION, max_patches=1, max_tokens=8)
        two = c.ask_study(pacs.url, pacs.slide_study, QUESTION, max_tokens=8)
    assert isinstance(one.sent, SlideSent) and isinstance(two.sent, SlideSent)
    assert (one.sent.sent, one.sent.total, one.sent.cells) == (1, 7, (TISSUE[3],)), one.sent
    assert one.sent.reason == "--max-slices 1" and one.sent.magnification == "10X"
    assert (two.sent.sent, two.sent.total) == (2, 7), two.sent
    # the second patch costs one image's tokens more (the same text before them)
    extra = two.usage["prompt_tokens"] - one.usage["prompt_tokens"]
    assert IMAGE_TOKENS <= extra <= IMAGE_TOKENS + 12, (one.usage, two.usage)

    out = tmp_path / "slides.jsonl"
    proc = clients_cli(
        server, "batch", "--dicomweb", pacs.url, "--modality", "SM", "--task", "findings",
        "--max-tokens", "8", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows[pacs.slide_study]["status"] == "ok", rows


def test_a_slide_without_tissue_is_one_line_and_nothing_is_stored(
    server: LiveServer, pacs: LivePacs, blank_slide: str
) -> None:
    before = instance_count(pacs)
    proc = clients_cli(
        server, "chat", QUESTION, "--no-stream", "--max-tokens", "8",
        "--dicomweb", pacs.url, "--study", blank_slide, "--store-sr",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the slide shows no tissue: none of "), (
        lines
    )
    assert "12 patches of 896 px at 10X" in lines[0] and "Traceback" not in proc.stderr
    assert instance_count(pacs) == before


def test_a_study_that_is_not_a_slide_where_one_is_expected(
    server: LiveServer, pacs: LivePacs
) -> None:
    client = MedGemmaClient(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    # other tests may have stored an SR into the phantom's study: "it holds CT, SR"
    with client, pytest.raises(StudyError, match=r"holds no whole-slide image .*; it holds CT\b"):
        client.ask_slide(pacs.url, pacs.phantom_study, QUESTION, max_tokens=8)
    proc = clients_cli(
        server, "chat", QUESTION, "--dicomweb", pacs.url, "--study", pacs.slide_study,
        "--window", "rgb",
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "error: --window and --tags are for radiology series, not a whole slide"
    ), proc.stderr
