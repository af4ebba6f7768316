"""clients.batch: study discovery, torn-line tolerant reading, resume, compaction (pure), and
a run against a fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from clients import batch
from clients.batch import Study, discover
from clients.batch_records import (
    compact,
    latest,
    parse_batch_records,
    pending,
    read_batch_records,
)
from clients.chat import MedGemmaClient
from clients.tasks import TASKS
from tests.fake_openai import serve_fake_openai
from tests.images import chest_like_png


def test_discover_finds_images_and_dicom_with_stable_relative_ids(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cxr.png").write_bytes(chest_like_png(32))
    (tmp_path / "a" / "cxr.txt").write_text("report")  # sidecar, not a study
    (tmp_path / "IM0001").write_bytes(
        Path(get_testdata_file("MR_small.dcm", download=False)).read_bytes()
    )
    (tmp_path / "notes").write_text("not dicom, no extension")
    (tmp_path / ".hidden.png").write_bytes(chest_like_png(32))
    (tmp_path / "b.JPG").write_bytes(b"whatever")  # a study; decoding it fails later, recorded
    ids = [s.id for s in discover(tmp_path)]
    assert ids == ["IM0001", "a/cxr.png", "b.JPG"], ids
    assert Study("a/cxr.png", tmp_path / "a" / "cxr.png").report_path == tmp_path / "a" / "cxr.txt"


def test_discover_finds_pdfs_only_for_documents(tmp_path):
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4")  # a study; reading it fails later
    (tmp_path / "page.png").write_bytes(chest_like_png(32))
    assert [s.id for s in discover(tmp_path)] == ["page.png"]
    assert [s.id for s in discover(tmp_path, documents=True)] == ["page.png", "report.pdf"]


def test_discover_needs_a_folder(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        discover(tmp_path / "missing")


def test_a_torn_last_line_is_ignored():
    text = '{"id": "a", "status": "ok"}\n{"id": "b", "status": "error"}\n{"id": "c", "sta'
    assert [r["id"] for r in parse_batch_records(text)] == ["a", "b"]


def test_last_record_wins_and_only_failures_and_new_studies_are_pending(tmp_path):
    records = [
        {"id": "a", "status": "error", "error": "x"},
        {"id": "b", "status": "ok"},
        {"id": "a", "status": "ok"},
        {"id": "c", "status": "error", "error": "y"},
    ]
    done = latest(records)
    assert {k: v["status"] for k, v in done.items()} == {"b": "ok", "a": "ok", "c": "error"}
    studies = [Study(i, tmp_path / i) for i in ("a", "b", "c", "d")]
    assert [s.id for s in pending(studies, done)] == ["c", "d"]


def test_compact_keeps_one_record_per_study_and_drops_a_torn_line(tmp_path):
    out = tmp_path / "results.jsonl"
    out.write_text(
        json.dumps({"id": "a", "status": "error"})
        + "\n"
        + json.dumps({"id": "b", "status": "ok"})
        + "\n"
        + json.dumps({"id": "a", "status": "ok"})
        + "\n"
        + '{"id": "c", "status": "o'
    )
    compact(out)
    text = out.read_text()
    assert text.endswith("\n") and [r["id"] for r in read_batch_records(out)] == ["b", "a"], text
    assert all(r["status"] == "ok" for r in read_batch_records(out))


def test_a_run_asks_for_the_model_once_records_each_study_and_a_rerun_retries_failures(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("MEDGEMMA_MODEL", raising=False)
    folder, out = tmp_path / "studies", tmp_path / "results.jsonl"
    folder.mkdir()
    for i in range(4):
        (folder / f"s{i}.png").write_bytes(chest_like_png(64, seed=i))
    (folder / "broken.png").write_text("not an image")
    findings = TASKS["findings"]
    with serve_fake_openai() as (url, server):
        client = MedGemmaClient(base_url=url, max_retries=0)
        first = asyncio.run(batch.run_batch(client, folder, findings, out, concurrency=3))
        gets = [path for method, path, _ in server.seen if method == "GET"]
        again = asyncio.run(batch.run_batch(client, folder, findings, out, max_tokens=8))
    assert (first.total, first.skipped, first.ok, first.failed) == (5, 0, 4, 1), first
    assert gets == ["/v1/models"], "the model is asked once, before the workers"
    assert (again.skipped, again.ok, again.failed) == (4, 0, 1), again
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["broken.png"]["error_type"] == "ImageError", records["broken.png"]
    assert all(records[f"s{i}.png"]["text"] == "an answer" for i in range(4)), records
