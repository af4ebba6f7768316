"""The benchmark runner: scenario, workload, Locust, records, metrics and report."""
