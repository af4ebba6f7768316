"""The pure parts of the readiness-probe start-up experiment and the pan-and-scan experiment
(benchmarks.experiments.startup_probe, benchmarks.experiments.pan_and_scan)."""

from __future__ import annotations

import pytest

from benchmarks.experiments.pan_and_scan import crops
from benchmarks.experiments.startup_probe import Start, summarize


def test_summarize_gives_medians_per_arm_and_the_difference() -> None:
    starts = [
        Start(1, "A", 40.0, 41.0, 2.0, 1.0),
        Start(1, "B", 40.0, 44.0, None, 1.0),
        Start(2, "A", 50.0, 51.0, 4.0, 1.0),
        Start(2, "B", 45.0, 48.0, None, 1.0),
        Start(3, "A", 45.0, 46.0, 3.0, 1.0),
        Start(3, "B", 50.0, 52.0, None, 1.0),
    ]
    s = summarize(starts)
    assert s["A_ready_median_s"] == 46.0 and s["B_ready_median_s"] == 48.0, s
    assert s["B_probe_median_s"] == 3.0 and s["A_first_request_median_s"] == 3.0, s
    assert s["B_minus_A_median_s"] == 2.0, s
    assert summarize([]) == {}


@pytest.mark.parametrize(
    ("size", "max_crops", "expected"),
    [
        ((896, 896), 4, 0),  # square: never
        ((1000, 896), 4, 0),  # ratio 1.12 < 1.2
        ((1344, 896), 4, 2),  # at least 2 once active
        ((1792, 896), 4, 2),
        ((2688, 896), 4, 3),
        ((3584, 896), 4, 4),
        ((3584, 896), 2, 2),  # capped
        ((896, 2688), 4, 3),  # tall works the same way
        ((600, 300), 4, 2),  # two 300x300 crops
        ((500, 200), 4, 0),  # a crop would be 200 px high: under min_crop_size 256
    ],
)
def test_crops_follow_gemma3s_rule(size: tuple[int, int], max_crops: int, expected: int) -> None:
    assert crops(*size, max_num_crops=max_crops) == expected
