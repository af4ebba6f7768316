"""The benchmark harness against the real vLLM server (tiny model): reports and bad input.

About 40 s of load in all: one 2-user run through the CLI, one 2-level sweep through the
Python runner. Numbers are not asserted beyond "non-zero, no errors": speed lives in the
benchmarks themselves.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.runner.records import read_records
from benchmarks.runner.report import PLOTS
from benchmarks.runner.server_metrics import read_series
from tests.conftest import REPO
from tests.e2e.launcher import LiveServer

SMOKE = REPO / "configs" / "scenarios" / "bench-smoke.yaml"


def bench_cli(server: LiveServer, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = server.client_env()
    cmd = [sys.executable, "-m", "benchmarks", "run", "--scenario", str(SMOKE),
           "--base-url", server.base_url, "--out", str(out), *args]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def test_run_writes_every_report_file(server: LiveServer, tmp_path: Path) -> None:
    proc = bench_cli(server, tmp_path, "--users", "2", "--duration", "10")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (folder,) = tmp_path.iterdir()
    assert f"results folder: {folder}" in proc.stdout, proc.stdout[-1000:]
    assert folder.name.startswith("bench-smoke-") and folder.name.endswith("Z"), folder
    level = folder / "users-2"
    expected = [
        "scenario.yaml", "command.txt", "server.json", "metrics-before.txt", "metrics-after.txt",
        "records.jsonl", "summary.json", *PLOTS, "users-2/records.jsonl", "users-2/window.json",
        "users-2/locust_stats.csv", "users-2/locust_stats_history.csv",
        "users-2/locust_failures.csv", "users-2/locust.html",
        "server_series.csv", "client_series.csv", "timeline.png",
    ]  # fmt: skip
    missing = [name for name in expected if not (folder / name).is_file()]
    assert not missing, f"missing {missing} in {sorted(p.name for p in folder.rglob('*'))}"

    summary = json.loads((folder / "summary.json").read_text())
    (s,) = summary["levels"]
    assert s["completed"] > 0 and s["failed"] == 0, s
    assert s["request_throughput"] > 0 and s["output_throughput"] > 0, s
    assert s["ttft_ms"]["p50"] > 0 and s["e2e_ms"]["p99"] >= s["e2e_ms"]["p50"], s
    assert "shared" in summary["note"], summary["note"]

    records = read_records(folder / "records.jsonl")
    assert len(records) == s["requests"], (len(records), s)
    # fixed output length, token counts from the server's usage
    assert {r.output_tokens for r in records} == {8}, {r.output_tokens for r in records}
    image_prompts = [r.prompt_tokens for r in records if r.n_images == 1]
    assert image_prompts and min(image_prompts) > 256, image_prompts  # 256 image tokens each
    assert {r.kind for r in records} == {"image", "dicom", "text"}, {r.kind for r in records}

    with (level / "locust_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    for name in ("TTFT", "E2E"):
        assert int(rows[name]["Request Count"]) > 0, rows
        assert int(rows[name]["Failure Count"]) == 0, rows
    assert float(rows["TTFT"]["Median Response Time"]) <= float(
        rows["E2E"]["Median Response Time"]
    ), rows
    assert "TTFT" in (level / "locust.html").read_text()
    models = json.loads((folder / "server.json").read_text())["models"]
    assert models["data"][0]["id"] == server.model, models
    assert "vllm:" in (folder / "metrics-after.txt").read_text()
    assert "--users 2" in (folder / "command.txt").read_text()
    assert_server_series(folder, summary)


def assert_server_series(folder: Path, summary: dict[str, Any]) -> None:
    """The server's /metrics, sampled every second during the level: requests ran, tokens
    were generated, nothing failed, on the clients' time axis."""
    sampling = summary["server_metrics"]
    assert sampling["failures"] == {} and sampling["samples"] >= 5, sampling
    rows = read_series(folder / "server_series.csv")
    assert len(rows) == sampling["samples"], (len(rows), sampling)
    busy = [r for r in rows if (r["running"] or 0) > 0]
    assert busy and all(r["level"] == 2.0 for r in busy), rows
    assert max(r["running"] for r in busy) <= 2, busy  # 2 users
    assert any((r["generation_tokens_per_s"] or 0) > 0 for r in rows), rows
    assert any((r["kv_cache_usage"] or 0) > 0 for r in rows), rows
    with (folder / "client_series.csv").open() as f:
        client = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    assert max(r["in_flight"] for r in client) == 2, client
    # one time axis: the server was busy while the clients had requests in flight
    start, stop = client[0]["t_s"] - 1, client[-1]["t_s"]
    assert all(start <= r["t_s"] <= stop + 2 for r in busy), (start, stop, busy)


def test_two_level_sweep_produces_the_plots(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.runner.run import run_benchmark
    from benchmarks.runner.scenario import load_scenario

    monkeypatch.setenv("MEDGEMMA_API_KEY", server.api_key)
    scenario = load_scenario(SMOKE, ["load.users=[1, 3]", "load.duration_s=6", "load.warmup_s=1"])
    result = run_benchmark(scenario, server.base_url, out_root=tmp_path, quiet=True)
    levels = result.summary["levels"]
    assert [s["level"] for s in levels] == [1.0, 3.0], levels
    assert all(s["completed"] > 0 and s["failed"] == 0 for s in levels), levels
    for name in (*PLOTS, "timeline.png"):
        png = (result.folder / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, (name, len(png))
    assert result.summary["best"]["level"] in (1.0, 3.0), result.summary["best"]
    # each level starts on requests the server has not seen (vLLM caches images, prefixes)
    first, second = result.levels
    sent = result.summary["requests_sent"]
    assert 1 < first.next_index < second.next_index == sent, (first.next_index, sent)
    assert sent >= 1 + sum(s["requests"] for s in levels), (sent, levels)


def test_unserved_model_is_named_before_any_load(server: LiveServer, tmp_path: Path) -> None:
    proc = bench_cli(server, tmp_path, "--set", "model=medgemma-99b")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "does not serve model 'medgemma-99b'" in proc.stderr, proc.stderr
    assert server.model in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir()), "no results folder for a run that never started"


def test_request_the_server_rejects_is_named_before_any_load(
    server: LiveServer, tmp_path: Path
) -> None:
    # the tiny deployment allows 2 images per prompt
    proc = bench_cli(
        server, tmp_path, "--set", "images.per_request=3", "--set", "images.distinct=2"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "rejected the scenario's first request (HTTP 400)" in proc.stderr, proc.stderr
    assert "image" in proc.stderr.split("HTTP 400")[1], proc.stderr
    assert not list(tmp_path.iterdir())
