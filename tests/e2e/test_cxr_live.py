"""MedGemma 1.5's chest X-ray workloads end to end: the real PACS (the `pacs` fixture's
Orthanc, with the synthetic pair) and the real vLLM server (tiny stand-in, 2 images per
prompt).

- The pair: `chat --study CURRENT --prior auto --store-sr` finds the prior by QIDO-RS and
  sends both images, the answer stored into the current study; the server's usage shows
  two images' tokens (one image's more than the current alone with the same question).
- Localization: the stand-in's answer is random text, so the CLI ends in one `error:` line
  with the raw answer on stdout, no overlay and nothing stored. With the server made to
  answer the notebook's own answer (structured output: a fixed choice), the boxes parse,
  land in the original pixels and go into the study as SCOORD, read back from Orthanc.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pytest
import requests

from clients.boxes import padding_of, parse_boxes
from clients.chat import MedGemmaClient
from clients.cxr import image_part, radiograph
from clients.dicomweb import fetch_study
from clients.report_regions import region_items
from clients.report_sr import build_report_sr, store_sr
from serve.pacs.radiograph import COLUMNS, ROWS
from tests.conftest import REPO
from tests.e2e.launcher import LiveServer
from tests.pacs_fixture import LivePacs, needs_orthanc
from tests.unit.clients.test_boxes import NOTEBOOK_ANSWER
from tests.unit.clients.test_report_regions import scoords

pytestmark = needs_orthanc
IMAGE_TOKENS = 256
QUESTION = "Provide a comparison of these two images."


def clients_cli(server: LiveServer, *argv: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "clients", "chat", "--no-stream", *argv]
    return subprocess.run(
        cmd, cwd=REPO, env=server.client_env(), capture_output=True, text=True, timeout=300
    )


def instance_count(pacs: LivePacs) -> int:
    answer = requests.get(f"{pacs.orthanc.url}/statistics", timeout=10)
    answer.raise_for_status()
    return int(answer.json()["CountInstances"])


def test_prior_auto_sends_the_pair_end_to_end(server: LiveServer, pacs: LivePacs) -> None:
    proc = clients_cli(
        server, QUESTION, "--max-tokens", "8", "--dicomweb", pacs.url,
        "--study", pacs.cxr_current_study, "--prior", "auto", "--store-sr",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"report stored: study {pacs.cxr_current_study}, SR series" in proc.stderr
    line = (
        f"sent 2 images (prior, then current; chest radiographs, each its own window, no "
        f"labels, no dates); prior study {pacs.cxr_prior_study}, current study "
        f"{pacs.cxr_current_study}"
    )
    assert line in proc.stderr, proc.stderr
    found = re.search(r"'prompt_tokens': (\d+)", proc.stderr)
    assert found, proc.stderr
    # the current image alone with the same question, laid out the same way
    one = radiograph(fetch_study(pacs.url, pacs.cxr_current_study), None, "the").pixels
    turn = {"role": "user", "content": [image_part(one, 896), {"type": "text", "text": QUESTION}]}
    with MedGemmaClient(base_url=server.base_url, api_key=server.api_key, max_retries=0) as c:
        alone = c.complete([turn], max_tokens=8, temperature=0.0)
        via_api = c.compare_studies(
            pacs.url, pacs.cxr_current_study, QUESTION, prior=pacs.cxr_prior_study, max_tokens=8
        )
    pair = int(found.group(1))
    extra = pair - alone.usage["prompt_tokens"]
    print(f"\nprompt tokens: the pair {pair}, the current image alone {alone.usage}")
    # exactly one more image: its 256 tokens and the few that mark where it starts and ends
    assert IMAGE_TOKENS <= extra <= IMAGE_TOKENS + 8, (pair, alone.usage)
    assert via_api.usage["prompt_tokens"] == pair, (via_api.usage, pair)
    assert via_api.sent is not None and via_api.sent.modality == "DX", via_api.sent


def test_localize_with_the_stand_ins_random_answer_is_one_line_and_stores_nothing(
    server: LiveServer, pacs: LivePacs, tmp_path: Path
) -> None:
    overlay = tmp_path / "boxes.png"
    before = instance_count(pacs)
    proc = clients_cli(
        server, "--task", "localize", "--object", "right clavicle", "--max-tokens", "24",
        "--dicomweb", pacs.url, "--study", pacs.cxr_current_study,
        "--overlay", str(overlay), "--store-sr",
    )  # fmt: skip
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no parseable boxes" in errors[0], proc.stderr
    assert "the raw answer is above; nothing drawn or stored" in errors[0]
    assert "sent 1 image (localization: 320 x 384 padded to a centred 384 px square)" in (
        proc.stderr
    )
    assert proc.stdout.strip(), "the raw answer is kept on stdout"
    assert "Traceback" not in proc.stderr
    assert not overlay.exists()
    assert instance_count(pacs) == before


def test_localize_round_trips_the_notebooks_answer_into_the_study(
    server: LiveServer, pacs: LivePacs
) -> None:
    """The server answers the notebook's printed answer (structured output: a fixed choice,
    the model still runs); the boxes map back through the padding and go into the study."""
    with MedGemmaClient(base_url=server.base_url, api_key=server.api_key, max_retries=0) as c:
        found = c.localize_study(
            pacs.url,
            pacs.cxr_current_study,
            "right clavicle",
            max_tokens=200,
            extra_body={"structured_outputs": {"choice": [NOTEBOOK_ANSWER]}},
        )
    assert found.result.text == NOTEBOOK_ANSWER, found.result
    print(f"\nlocalize: usage {found.result.usage}, boxes {[b.as_json() for b in found.boxes]}")
    assert found.result.usage["prompt_tokens"] >= IMAGE_TOKENS, found.result.usage
    assert found.boxes == parse_boxes(NOTEBOOK_ANSWER, padding_of(COLUMNS, ROWS))
    (box,) = found.boxes
    assert box.x0 == pytest.approx(110 * 384 / 1000 - 32), box
    # the study's image (other tests may have stored their reports into the study)
    (image,) = [ds for ds in fetch_study(pacs.url, pacs.cxr_current_study) if ds.Modality == "DX"]
    sr = build_report_sr(
        [image], found.result.text, model_name=found.result.model,
        regions=region_items(found.boxes, image),
    )  # fmt: skip
    stored = store_sr(pacs.url, sr)
    (back,) = fetch_study(pacs.url, pacs.cxr_current_study, stored.series_uid)
    assert hd.sr.EnhancedSR.from_dataset(back).StudyInstanceUID == pacs.cxr_current_study
    ((label, data, sop),) = scoords(back)
    assert label == "right clavicle" and sop == image.SOPInstanceUID
    assert data[:2] == pytest.approx([box.x0, box.y0], abs=1e-3)
