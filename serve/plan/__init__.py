"""Capacity planning: GPU specs, KV-cache arithmetic, the planner (pure) and its report,
roofline ceilings, and `python -m serve plan` (cli)."""
