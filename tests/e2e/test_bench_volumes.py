"""bench-volumes.yaml against a real cpu-volumes server (the `volumes` stand-in): each study
is sent as its first question, then its follow-up on the same slices by the same user; the
report splits them, and the follow-ups ride vLLM's prefix cache.

Brief: 8 slices a study instead of 85 (the same layout: each slice, "SLICE n", then the
question), a 15 s run at one user, with far more distinct studies than it can send (47
sessions in 20 s were seen; 160 are prepared), so no study is sent twice. No speed is
asserted (docs/benchmarks.md has the figures): only that the follow-ups were sent after
their own first question and that their prompt tokens were served from the prefix cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.runner.prepared import FIRST, FOLLOW_UP, RADIOGRAPH
from benchmarks.runner.records import read_records
from serve.config.deployment import load_config
from serve.process import free_port
from tests.conftest import CONFIGS, LOG_DIR, REPO
from tests.e2e.launcher import API_KEY, serving

VOLUMES = REPO / "configs" / "scenarios" / "bench-volumes.yaml"


@pytest.mark.slow
def test_follow_ups_are_recorded_and_hit_the_prefix_cache(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "cpu-volumes.yaml", {"port": free_port()})
    environ = {**os.environ, cfg.api_key_env: API_KEY}
    with serving(cfg, LOG_DIR / f"pytest-volumes-{cfg.port}.log", environ) as srv:
        cmd = [
            sys.executable, "-m", "benchmarks", "run", "--scenario", str(VOLUMES),
            "--base-url", srv.base_url, "--out", str(tmp_path), "--duration", "15",
            "--set", "images.per_request=8", "--set", "images.distinct=160",
            "--set", "max_tokens=4",
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, cwd=REPO, env=srv.client_env(), capture_output=True, text=True, timeout=300
        )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "repeats may hit" not in proc.stdout, proc.stdout  # every study sent once
    (folder,) = tmp_path.iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    (level,) = summary["levels"]
    assert level["failed"] == 0, level["errors"]
    roles = level["roles"]
    assert roles[FIRST]["completed"] > 0 and roles[FOLLOW_UP]["completed"] > 0, roles
    assert level["studies"]["studies_per_s"] > 0 and level["studies"]["slices_per_s"] > 0
    assert level["studies"]["follow_up_over_first"]["e2e_ms"] is not None, level["studies"]

    records = read_records(folder / "records.jsonl")
    firsts = {r.session: r for r in records if r.role == FIRST}
    follow_ups = [r for r in records if r.role == FOLLOW_UP]
    for r in follow_ups:  # each after its own study's first question, on the same slices
        first = firsts[r.session]
        assert first.end_s <= r.start_s and first.n_images == r.n_images == 8, (first, r)
        assert abs(r.prompt_tokens - first.prompt_tokens) < 40, (first, r)  # the question
    assert all(r.n_images == 1 for r in records if r.role == RADIOGRAPH), records

    prefix = summary["caches"]["prefix_cache"]
    cached = sum(r.prompt_tokens for r in follow_ups)
    # fresh studies share no block with each other: the hits are the follow-ups' (and any
    # radiograph follow-up's), most of each follow-up's prompt
    assert prefix["hits"] >= 0.8 * cached > 0, (prefix, cached)
    assert "follow-up / first" in proc.stdout and "prefix cache (tokens)" in proc.stdout
