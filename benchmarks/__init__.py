"""Locust benchmarks of the serving path: workloads, runner, reports, seed baseline.

python -m benchmarks run --scenario configs/scenarios/bench-cpu.yaml --base-url http://127.0.0.1:8000/v1
"""
