"""`python -m benchmarks volumes`, its pure parts: a fresh study per round (first question,
then the follow-up on the same slices), the round's line and the verdict on the target."""

from __future__ import annotations

from typing import Any

from benchmarks.experiments.volumes import median_line, round_line, study
from benchmarks.runner.prepared import FIRST, FOLLOW_UP
from benchmarks.runner.scenario import load_scenario
from tests.conftest import REPO

VOLUMES = REPO / "configs" / "scenarios" / "bench-volumes.yaml"


def test_each_round_is_a_fresh_volume_and_its_follow_up() -> None:
    s = load_scenario(VOLUMES, ["images.per_request=2", "images.sizes=[[64, 64]]"])
    a, b = study(s, "m", 1), study(s, "m", 2)
    assert [r.role for r in a] == [FIRST, FOLLOW_UP] and {r.kind for r in a} == {"study"}
    assert a[0].body != b[0].body, "a new seed, new slices: nothing cached"
    assert study(s, "m", 1) == a, "the same seed, the same bytes"


def row(first: float, follow: float) -> dict[str, Any]:
    rec = {"latency_s": first, "ttft_s": first - 0.1, "prompt_tokens": 22_913}
    fu = {"latency_s": follow, "ttft_s": follow - 0.1, "prompt_tokens": 22_920}
    caches = {"prefix_cache": {"hits": 22_784, "queries": 22_920},
              "mm_cache": {"hits": 85, "queries": 85}}  # fmt: skip
    return {"requests": [{"record": rec, "caches": {}}, {"record": fu, "caches": caches}],
            "ratio": round(follow / first, 3), "load_average": 1.5}  # fmt: skip


def test_round_line_and_verdict() -> None:
    line = round_line("cached round 1", row(6.0, 0.6))
    assert line.startswith("cached round 1: first 6.00 s (TTFT 5.90 s, 22,913 prompt tokens)")
    assert "0.100x" in line and "prefix cache 22,784 of 22,920 tokens" in line, line
    assert "processed images 85 of 85" in line and "load average 1.50" in line, line
    assert median_line("x", [row(6, 0.6), row(6, 1.2), row(6, 0.3)]).endswith("goal met")
    assert median_line("x", [row(6, 2.4), row(6, 3.0)]).endswith(": target met")
    assert "0.600x (median of 1 rounds" in median_line("x", [row(5, 3.0)])
    assert median_line("x", [row(5, 4.0)]).endswith("target missed")
