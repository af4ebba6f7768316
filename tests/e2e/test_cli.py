"""`python -m clients` as a user runs it, against the real vLLM server: chat, models,
batch (with a process killed mid-run and rerun), and one clear line for bad input."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from clients.batch_records import read_batch_records
from tests.conftest import REPO
from tests.e2e.launcher import LiveServer, wait_until
from tests.images import chest_like_png


def cli(server: LiveServer, *args: str, timeout: float = 300, **env: str):
    return subprocess.run(
        [sys.executable, "-m", "clients", *args],
        cwd=REPO,
        env=server.client_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG header claiming 400 M pixels (over Pillow's limit) with a tiny body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_help_on_each_command(server: LiveServer) -> None:
    for args in ([], ["chat"], ["batch"], ["models"]):
        r = cli(server, *args, "--help")
        assert r.returncode == 0 and "usage: python -m clients" in r.stdout, r.stderr


def test_models_and_chat_stream(server: LiveServer, tmp_path: Path) -> None:
    r = cli(server, "models")
    assert r.returncode == 0 and r.stdout.split() == [server.model], (r.stdout, r.stderr)
    img = tmp_path / "cxr.png"
    img.write_bytes(chest_like_png(2048))
    r = cli(server, "chat", "--image", str(img), "--max-tokens", "12", "Describe this X-ray")
    assert r.returncode == 0 and r.stdout.strip(), (r.stdout, r.stderr)
    assert "finish_reason=length" in r.stderr and "'completion_tokens': 12" in r.stderr, r.stderr


def test_chat_consistency_prints_the_typed_json(server: LiveServer, tmp_path: Path) -> None:
    img = tmp_path / "cxr.png"
    img.write_bytes(chest_like_png())
    r = cli(
        server, "chat", "--task", "consistency", "--image", str(img), "--report", "Normal chest."
    )
    assert r.returncode == 0 and '"consistent"' in r.stdout and '"confidence"' in r.stdout, r


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "no such file"),
        ("text", "not an image"),
        ("no_pixels", "no pixel data"),
        ("bomb", "too large to decode safely"),
        ("multiframe", "15 frames"),
        ("400", "the server answered 400: max_tokens=100000"),
        ("401", "the server refused the API key (401)"),
        ("refused", "cannot reach the MedGemma server at http://127.0.0.1:9/v1"),
    ],
)
def test_bad_input_is_one_clear_line(server: LiveServer, tmp_path: Path, case: str, expect: str):
    image = tmp_path / "cxr.png"
    image.write_bytes(chest_like_png(64))
    args, env = ["chat", "--max-tokens", "4"], {}
    if case == "missing":
        args += ["--image", str(tmp_path / "nope.png")]
    elif case == "text":
        (tmp_path / "notes.png").write_text("hello")
        args += ["--image", str(tmp_path / "notes.png")]
    elif case == "no_pixels":
        args += ["--image", str(get_testdata_file("rtplan.dcm", download=False))]
    elif case == "bomb":
        (tmp_path / "bomb.png").write_bytes(bomb_png())
        args += ["--image", str(tmp_path / "bomb.png")]
    elif case == "multiframe":
        args += ["--image", str(get_testdata_file("rtdose.dcm", download=False))]
    elif case == "400":
        args = ["chat", "--max-tokens", "100000", "--image", str(image)]
    elif case == "401":
        env = {"MEDGEMMA_API_KEY": "wrong"}
    elif case == "refused":
        args += ["--base-url", "http://127.0.0.1:9/v1", "--retries", "0"]
    r = cli(server, *args, "hi", **env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert expect in lines[0] and "Traceback" not in r.stderr, lines


def make_studies(folder: Path, n: int) -> list[str]:
    ct = Path(str(get_testdata_file("CT_small.dcm", download=False))).read_bytes()
    ids = []
    for i in range(n):
        sub = folder / f"patient{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        if i % 4 == 0:
            (sub / f"study{i:02d}.dcm").write_bytes(ct)
            ids.append(f"patient{i % 3}/study{i:02d}.dcm")
        else:
            (sub / f"study{i:02d}.png").write_bytes(chest_like_png(512 + 64 * i, seed=i))
            ids.append(f"patient{i % 3}/study{i:02d}.png")
    return sorted(ids)


def test_batch_killed_mid_run_then_rerun_has_every_study_exactly_once(
    server: LiveServer, tmp_path: Path
) -> None:
    folder, out = tmp_path / "studies", tmp_path / "results.jsonl"
    ids = make_studies(folder, 24)
    args = ["batch", str(folder), "--task", "findings", "--out", str(out), "--no-progress"]
    cmd = [sys.executable, "-m", "clients", *args, "--concurrency", "2", "--max-tokens", "48"]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=server.client_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(
            lambda: len(read_batch_records(out)) >= 4 or proc.poll() is not None,
            240,
            f"the batch wrote fewer than 4 records to {out}",
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    before = {r["id"]: r for r in read_batch_records(out)}
    assert 4 <= len(before) < len(ids), (
        f"kill should land mid-run: {len(before)} of {len(ids)} done"
    )

    r = cli(server, *args, "--concurrency", "8", "--max-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert f"{len(before)} already done" in r.stderr, r.stderr
    records = read_batch_records(out)
    seen = [rec["id"] for rec in records]
    assert sorted(seen) == ids, f"every study exactly once: {sorted(seen)}"
    assert all(rec["status"] == "ok" and rec["text"] for rec in records), records
    after = {rec["id"]: rec for rec in records}
    assert all(after[k] == v for k, v in before.items()), "finished studies were redone"


def test_batch_records_failures_and_a_rerun_retries_only_those(
    server: LiveServer, tmp_path: Path
) -> None:
    folder, out = tmp_path / "studies", tmp_path / "results.jsonl"
    folder.mkdir()
    (folder / "good.png").write_bytes(chest_like_png())
    (folder / "broken.png").write_bytes(b"not really a png")
    (folder / "cine.dcm").write_bytes(
        Path(get_testdata_file("rtdose.dcm", download=False)).read_bytes()
    )
    (folder / "good.txt").write_text("Normal chest.")
    args = ["batch", str(folder), "--out", str(out), "--max-tokens", "8", "--no-progress"]
    r = cli(server, *args)
    assert r.returncode == 1 and "1 ok, 2 failed" in r.stderr, r.stderr
    first = {rec["id"]: rec for rec in read_batch_records(out)}
    assert (
        first["broken.png"]["error_type"] == "ImageError"
        and "not an image" in first["broken.png"]["error"]
    )
    assert "15 frames" in first["cine.dcm"]["error"], first["cine.dcm"]

    (folder / "broken.png").write_bytes(chest_like_png(seed=3))  # the user fixes one file
    r = cli(server, *args)
    assert "1 already done, 1 ok, 1 failed" in r.stderr, r.stderr
    second = {rec["id"]: rec for rec in read_batch_records(out)}
    assert len(read_batch_records(out)) == 3, "one line per study"
    assert second["good.png"] == first["good.png"], "a finished study was redone"
    assert second["broken.png"]["status"] == "ok" and second["cine.dcm"]["status"] == "error"


def test_batch_report_tasks_read_the_sidecar_report(server: LiveServer, tmp_path: Path) -> None:
    folder, out = tmp_path / "studies", tmp_path / "results.jsonl"
    folder.mkdir()
    (folder / "a.png").write_bytes(chest_like_png())
    (folder / "a.txt").write_text("Normal chest radiograph.")
    (folder / "b.png").write_bytes(chest_like_png(seed=1))
    r = cli(
        server, "batch", str(folder), "--task", "consistency", "--out", str(out), "--no-progress"
    )
    recs = {rec["id"]: rec for rec in read_batch_records(out)}
    assert recs["a.png"]["status"] == "ok" and set(recs["a.png"]["parsed"]) == {
        "consistent",
        "discrepancies",
        "confidence",
    }, recs
    assert "needs a report: none at b.txt" in recs["b.png"]["error"], recs["b.png"]
    assert r.returncode == 1, r.stderr


def test_batch_stops_on_a_wrong_key_and_records_nothing(server: LiveServer, tmp_path: Path) -> None:
    folder, out = tmp_path / "studies", tmp_path / "results.jsonl"
    make_studies(folder, 3)
    r = cli(
        server, "batch", str(folder), "--out", str(out), "--no-progress", MEDGEMMA_API_KEY="wrong"
    )
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "error: the server refused the API key (401): set MEDGEMMA_API_KEY to the key the server "
        "was started with (unknown API key: send `Authorization: Bearer KEY` with a key this "
        "server issued)"
    ], r.stderr
    assert read_batch_records(out) == [], "a run-level failure must not mark studies as failed"
