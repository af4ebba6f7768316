"""Locust benchmarks of the serving path: runner/ (scenario to results folder), studies/
(comparisons built on it), tools/ (what the studies start)."""
