"""The profile and the seed baseline against the real vLLM server (tiny model), and the
bad input of profile, baseline and ab: one clear line each, exit non-zero.

About 70 s of load: a profile at 1 and 2 users, a two-round baseline. Figures are not
asserted beyond "measured and non-zero": speed lives in the benchmarks themselves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.launcher import LiveServer
from tests.in_process import run_main

SMOKE = REPO / "configs" / "scenarios" / "bench-smoke.yaml"


def bench(server: LiveServer | None, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = server.client_env() if server else {**os.environ, "MEDGEMMA_API_KEY": ""}
    cmd = [sys.executable, "-m", "benchmarks", *args, "--out", str(out)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr (no traceback)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0, proc.stdout[-1000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def test_profile_splits_cpu_by_process_and_stage(server: LiveServer, tmp_path: Path) -> None:
    proc = bench(
        server, tmp_path, "profile", "--scenario", str(SMOKE), "--base-url", server.base_url,
        "--users", "2", "--duration", "14", "--set", "load.warmup_s=3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (folder,) = tmp_path.iterdir()
    report = json.loads((folder / "profile.json").read_text())
    assert [lv["level"] for lv in report["levels"]] == [1.0, 2.0], report["levels"]
    for lv in report["levels"]:
        procs = lv["processes"]
        assert set(procs) == {"api_server", "engine_core", "worker", "load_generator"}, procs
        assert lv["completed_requests"] > 0, lv
        worker = procs["worker"]
        assert worker["cpu_s"] > 0 and worker["samples"] > 0, worker
        stages = worker["stages_ms_per_request"]
        assert stages.get("language model forward (prefill + decode)", 0) > 0, stages
        # the stages split the process's CPU: they add up to its CPU per request
        assert sum(stages.values()) == pytest.approx(worker["cpu_ms_per_request"], rel=0.02)
        assert sum(p["share"] for p in procs.values()) == pytest.approx(1.0, abs=0.01)
        level_dir = Path(lv["folder"])
        svgs = sorted(level_dir.glob("*.svg"))
        kinds = {p.name.split("-")[0] for p in svgs}
        assert {"worker", "engine_core"} <= kinds, svgs
        assert svgs[0].read_text().lstrip().startswith("<?xml"), svgs
    assert (folder / "stages.png").stat().st_size > 1000
    assert "worker:" in proc.stdout and "cores" in proc.stdout, proc.stdout[-1500:]


def test_baseline_alternates_rounds_and_prints_the_median(
    server: LiveServer, tmp_path: Path
) -> None:
    proc = bench(
        server, tmp_path, "baseline", "--scenario", str(SMOKE), "--base-url", server.base_url,
        "--rounds", "2", "--users", "1", "--duration", "8", "--set", "baseline_requests=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (folder,) = tmp_path.iterdir()
    result = json.loads((folder / "baseline.json").read_text())
    assert [r["round"] for r in result["rounds"]] == [1, 2], result["rounds"]
    ratios = [r["ratio"] for r in result["rounds"]]
    assert all(r is not None and r > 0 for r in ratios), result["rounds"]
    assert result["ratio"]["median"] == pytest.approx(
        sorted(ratios)[0] / 2 + sorted(ratios)[1] / 2, abs=1e-3
    )
    for r in result["rounds"]:
        assert r["seed_output_tok_s"] > 0 and r["deployment_output_tok_s"] > 0, r
        phases = r["machine"]
        assert set(phases) == {"deployment", "seed", "end"}, phases
        assert len(phases["seed"]["loadavg"]) == 3 and phases["seed"]["cpu_count"], phases
    # each round sent its own images: the deployment folders' seeds differ
    seeds = [
        yaml.safe_load((Path(r["deployment_folder"]) / "scenario.yaml").read_text())["seed"]
        for r in result["rounds"]
    ]
    assert len(set(seeds)) == 2, seeds
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"ratio: \d+\.\d\d \(median of 2 rounds; min \d+\.\d\d, max \d+\.\d\d\)", last
    ), last
    assert result["torch_threads"] >= 1 and result["dtype"] in ("bfloat16", "float32"), result


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["profile", "--base-url", "http://127.0.0.1:9/v1"], "cannot reach http://127.0.0.1:9/v1"),
        (["baseline", "--base-url", "http://127.0.0.1:9/v1"], "cannot reach http://127.0.0.1:9/v1"),
        (["baseline", "--rounds", "0"], "--rounds must be at least 1 (got 0)"),
        (
            ["profile", "--set", "images.text_only_share=1", "--set", "images.dicom_share=0"],
            "sends no images",
        ),
        (
            ["baseline", "--set", "images.text_only_share=1", "--set", "images.dicom_share=0"],
            "sends no images",
        ),
        (["ab", "--a", "dtype=float32", "--b", "dtype=float32"], "are the same deployment"),
        (["ab", "--a", "max_num_seqs", "--b", "dtype=float32"], "is not of the form key=value"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path,
    args: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused before any load: benchmarks' `main(argv)` in this process."""
    from benchmarks.__main__ import main

    monkeypatch.setenv("MEDGEMMA_API_KEY", "")
    command, rest = args[0], args[1:]
    argv = [command, "--scenario", str(SMOKE), *rest, "--out", str(tmp_path)]
    proc = run_main(main, argv, capsys)
    line = one_error_line(proc)
    assert expected in line, line
    assert not any(tmp_path.iterdir()), "a refused run must not leave a results folder"


@pytest.mark.parametrize("command", ["profile", "baseline"])
def test_a_server_serving_another_model_is_named(
    server: LiveServer, tmp_path: Path, command: str
) -> None:
    proc = bench(
        server, tmp_path, command, "--scenario", str(SMOKE), "--base-url", server.base_url,
        "--set", "model=some-other-model",
    )  # fmt: skip
    line = one_error_line(proc)
    assert "does not serve model 'some-other-model'" in line, line
