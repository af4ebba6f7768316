"""Studies from a real PACS (the `pacs` fixture's Orthanc) to the real vLLM server (tiny
model, image limit 2): the CLI fits the CT phantom's 60 slices to the 2 images the server
publishes and says why; K slices grow the prompt by each image's tokens; a batch over the
PACS writes one record per study, a rerun none; the PACS's CT and MR volumes are found by
QIDO-RS with their slice counts and come back in order."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import highdicom as hd

from clients.batch import DicomwebStudy, run_items
from clients.chat import MedGemmaClient
from clients.dicomweb import fetch_study, search_studies
from clients.limits import SLICE_OVERHEAD_TOKENS
from clients.series import choose_series, group_series, order_slices
from clients.study_request import StudyOptions
from clients.tasks import TASKS
from serve.pacs.phantom import phantom_series
from serve.pacs.samples import CT_VOLUME, MR_VOLUME
from tests.conftest import REPO
from tests.e2e.launcher import LiveServer
from tests.pacs_fixture import LivePacs, needs_orthanc
from tests.unit.clients.test_report_sr import referenced, text_of

IMAGE_TOKENS = 256  # MedGemma's (and the stand-in's) tokens per image


@needs_orthanc
def test_chat_fits_the_ct_volume_to_the_servers_image_limit(
    server: LiveServer, pacs: LivePacs
) -> None:
    """Issue 21's first try: `chat --dicomweb URL --study UID "Describe this CT study"`
    against cpu-tiny sent 60 of 60 slices and met the server's 400; now the client learns
    the limit from /v1/models and sends 2, saying why."""
    cmd = [
        sys.executable, "-m", "clients", "chat", "Describe this CT study", "--no-stream",
        "--max-tokens", "8", "--dicomweb", pacs.url, "--study", pacs.phantom_study,
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=REPO, env=server.client_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sent = "sent 2 of 60 slices (CT, 3 windows): the server takes at most 2 images per prompt"
    assert sent in proc.stderr and "positions 0, 59" in proc.stderr, proc.stderr
    assert "publishes no image limit" not in proc.stderr, proc.stderr


@needs_orthanc
def test_chat_sends_k_slices_of_the_phantom(server: LiveServer, pacs: LivePacs) -> None:
    cmd = [
        sys.executable, "-m", "clients", "chat", "Any lesion?", "--no-stream",
        "--max-tokens", "8", "--dicomweb", pacs.url, "--study", pacs.phantom_study,
        "--max-slices", "2",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=REPO, env=server.client_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sent 2 of 60 slices (CT, 3 windows): --max-slices 2" in proc.stderr, proc.stderr
    assert "positions 0, 59" in proc.stderr, proc.stderr
    found = re.search(r"'prompt_tokens': (\d+)", proc.stderr)
    assert found, proc.stderr
    with MedGemmaClient(base_url=server.base_url, api_key=server.api_key, max_retries=0) as c:
        one = c.ask_study(pacs.url, pacs.phantom_study, "Any lesion?", max_slices=1, max_tokens=8)
    assert one.sent is not None and one.sent.indices == (29,), one.sent
    two = int(found.group(1))
    assert two - one.usage["prompt_tokens"] >= IMAGE_TOKENS, (two, one.usage)
    # clients.limits budgets a slice at 256 + SLICE_OVERHEAD_TOKENS (markers, "SLICE n"):
    # one more image and two labels stay within 256 + 2 x that overhead
    extra = two - one.usage["prompt_tokens"] - IMAGE_TOKENS
    assert extra <= 2 * SLICE_OVERHEAD_TOKENS, (two, one.usage, extra)
    assert one.usage["prompt_tokens"] >= IMAGE_TOKENS, one.usage


@needs_orthanc
def test_a_batch_over_the_pacs_is_one_record_per_study_and_resumes(
    server: LiveServer, pacs: LivePacs, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    options = StudyOptions()  # the recipe, fitted to the 2 images the server publishes
    items = [DicomwebStudy(r.study_uid, pacs.url, options) for r in search_studies(pacs.url, "CT")]
    client = MedGemmaClient(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    first = asyncio.run(run_items(client, items, TASKS["findings"], out, max_tokens=8))
    again = asyncio.run(run_items(client, items, TASKS["findings"], out, max_tokens=8))
    assert (first.total, first.ok, first.failed) == (len(items), len(items), 0), first
    assert (again.skipped, again.ok, again.failed) == (len(items), 0, 0), again
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(i.id for i in items) and pacs.phantom_study in ids, ids


@needs_orthanc
def test_chat_store_sr_round_trip_puts_the_answer_in_the_study(
    server: LiveServer, pacs: LivePacs
) -> None:
    """PACS study in, answer out, answer back in the PACS as an SR of the same study that
    references the two slices the model saw."""
    cmd = [
        sys.executable, "-m", "clients", "chat", "Any lesion?", "--no-stream",
        "--max-tokens", "8", "--dicomweb", pacs.url, "--study", pacs.phantom_study,
        "--max-slices", "2", "--store-sr",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=REPO, env=server.client_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stored = re.search(r"report stored: study (\S+), SR series (\S+)", proc.stderr)
    assert stored and stored[1] == pacs.phantom_study, proc.stderr
    (back,) = fetch_study(pacs.url, pacs.phantom_study, stored[2])
    report = hd.sr.EnhancedSR.from_dataset(back)
    # clients.report_sr stores the answer stripped (the stand-in's may start with a space)
    assert text_of(report, "Finding") == proc.stdout.strip()
    assert "not a diagnosis" in text_of(report, "Comment")
    assert text_of(report, "Device Observer Model Name") == server.model
    ordered = order_slices(choose_series(group_series(phantom_series(pacs.phantom))))
    seen = {ordered[0].source.SOPInstanceUID, ordered[-1].source.SOPInstanceUID}
    assert {uid for _, _, uid in referenced(report)} == seen
    assert "PHANTOM" not in proc.stderr + proc.stdout  # no patient name printed


@needs_orthanc
def test_qido_finds_the_ct_and_mr_volumes_with_their_slices(pacs: LivePacs) -> None:
    """The volumes the recipes are for: found by modality with their slice counts, and
    fetched back by WADO-RS they order along the normal in InstanceNumber order."""
    for modality, study, slices in (
        ("CT", pacs.ct_volume_study, CT_VOLUME.slices),
        ("MR", pacs.mr_volume_study, MR_VOLUME.slices),
    ):
        found = {s.study_uid: s for s in search_studies(pacs.url, modality)}
        assert study in found, (modality, list(found))
        assert (found[study].modalities, found[study].instances) == ((modality,), slices)
        series = choose_series(group_series(fetch_study(pacs.url, study)))
        ordered = [int(s.attrs.InstanceNumber) for s in order_slices(series)]
        assert ordered == list(range(1, slices + 1)), (modality, ordered)
    assert CT_VOLUME.slices >= 100
