"""`python -m benchmarks compare A B` on results folders whose summary.json the runner's own
code wrote (metrics.summarise per level, run.overall_summary), and on folders that are not
results folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.runner.compare import differences, load_summary
from benchmarks.runner.errors import BenchError
from benchmarks.runner.metrics import summarise
from benchmarks.runner.records import RequestRecord
from benchmarks.runner.run import LevelResult, level_name, overall_summary
from benchmarks.runner.scenario import load_scenario
from tests.conftest import REPO

SMOKE = REPO / "configs" / "scenarios" / "bench-smoke.yaml"


def results_folder(root: Path, name: str, ttft_s: float, failed: int, users: list[int]) -> Path:
    """A results folder's summary.json as run_benchmark writes it: 10 requests per level in
    a 10 s window, 8 output tokens each, `failed` of them failed."""
    scenario = load_scenario(SMOKE, [f"load.users={users}"])
    folder = root / name
    levels = []
    for level in scenario.load.levels:
        records = [
            RequestRecord(
                start_s=100.0 + i, success=i >= failed, error="HTTP 500" if i < failed else "",
                status=200 if i >= failed else 500, ttft_s=ttft_s, latency_s=1.0,
                prompt_tokens=300, output_tokens=8, level=level,
            )
            for i in range(10)
        ]  # fmt: skip
        summary = {"level": level, **summarise(records, 10.0, scenario.slo)}
        levels.append(LevelResult(level, summary, records, folder / level_name(scenario, level)))
    folder.mkdir(parents=True)
    summary = overall_summary(scenario, "http://127.0.0.1:8000/v1", "tiny", levels, 0.1)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return folder


def compare_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "benchmarks", "compare", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_differences_level_by_level(tmp_path: Path) -> None:
    a = load_summary(results_folder(tmp_path, "a", 0.1, 0, [1, 4]))
    b = load_summary(results_folder(tmp_path, "b", 0.15, 1, [1, 4, 16]))
    diffs = {(d.level, d.metric): d for d in differences(a, b)}
    assert {level for level, _ in diffs} == {1.0, 4.0}, diffs  # 16 is only in B
    ttft = diffs[1.0, "TTFT p50 ms"]
    assert (ttft.a, ttft.b) == (100.0, 150.0), ttft
    assert ttft.delta == pytest.approx(50.0) and ttft.relative == pytest.approx(0.5), ttft
    tok = diffs[4.0, "output tok/s"]  # 10 x 8 tokens, then 9 x 8, over 10 s
    assert (tok.a, tok.b) == (8.0, 7.2) and tok.relative == pytest.approx(-0.1), tok
    errors = diffs[4.0, "failed requests"]
    assert (errors.a, errors.b, errors.delta, errors.relative) == (0, 1, 1, None), errors


def test_closed_and_open_loop_runs_do_not_compare(tmp_path: Path) -> None:
    a = load_summary(results_folder(tmp_path, "a", 0.1, 0, [1]))
    b = dict(a, mode="open")
    with pytest.raises(BenchError, match="closed-loop run and B a open-loop run"):
        differences(a, b)
    other = load_summary(results_folder(tmp_path, "c", 0.1, 0, [2]))
    with pytest.raises(BenchError, match="no level in common: A ran 1, B ran 2"):
        differences(a, other)


def test_cli_prints_the_table_and_writes_the_plot(tmp_path: Path) -> None:
    a = results_folder(tmp_path, "run-a", 0.1, 0, [1, 4])
    b = results_folder(tmp_path, "run-b", 0.15, 1, [1, 4, 16])
    proc = compare_cli(a, b)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    plot = tmp_path / "compare-run-a-vs-run-b.png"
    assert f"plot: {plot}" in out, out
    assert plot.read_bytes().startswith(b"\x89PNG"), plot
    assert f"A: {a}" in out and f"B: {b}" in out, out
    assert "+50.0%" in out and "-10.0%" in out, out  # TTFT p50, output tok/s at 4 users
    assert "only in B, not compared: 16" in out, out
    chosen = tmp_path / "elsewhere.png"
    proc = compare_cli(a, b, "--out", chosen)
    assert proc.returncode == 0 and f"plot: {chosen}" in proc.stdout, proc.stdout + proc.stderr
    assert chosen.stat().st_size > 10_000, chosen.stat()


def not_results(folder: Path, how: str) -> Path:
    if how == "missing":
        return folder / "missing"
    folder.mkdir()
    if how == "bad-summary":
        (folder / "summary.json").write_text('{"levels": [{"level": 1}]}')
    return folder


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("missing", "no such folder"),
        ("no-summary", "it has no summary.json (`python -m benchmarks run` writes one)"),
        ("bad-summary", "its summary.json is not a run's summary (KeyError: 'output_throughput')"),
    ],
)
def test_a_folder_that_is_not_a_results_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str, said: str
) -> None:
    good = results_folder(tmp_path, "run", 0.1, 0, [1])
    bad = not_results(tmp_path / "not-results", how)
    assert main(["compare", str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert err == f"error: {bad} is not a results folder: {said}\n", err
    assert out == "" and not list(tmp_path.glob("*.png")), out
