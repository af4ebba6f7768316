"""Locust benchmarks of the serving path: runner/ (scenario to results folder), experiments/
(comparisons built on it), tools/ (what the experiments start)."""
