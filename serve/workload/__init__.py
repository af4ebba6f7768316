"""A benchmark scenario's request shape: what one request of a scenario sends and expects.

Its images (how many per request, their kind and size), its text (the clients' task
presets or a literal prompt, and so its text tokens), its answer (max_tokens, fixed
length or not, temperature) and the latency objective it is judged by (`slo`). The
benchmark's `Scenario` (benchmarks.runner.scenario) builds on `ScenarioRequest` and adds
how the load is sent; `python -m serve plan` and `python -m serve render` read a scenario
file's request through `read_request`, so serve never imports benchmarks. Imports the
config loader (serve.config.yaml_file) and clients only.
"""
