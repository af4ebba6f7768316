"""The GPU benchmark scenarios: bench-gpu.yaml (closed loop, 1 to 256 users) and its open-loop
twin bench-gpu-open.yaml load and validate, and their numbers are the planner's for the H100
config they name: the rates fractions of its ceiling, the per-token SLO above its pace."""

from __future__ import annotations

import json

import pytest

from benchmarks.runner.scenario import load_scenario
from serve.config.deployment import load_config
from serve.plan import cli as plan_cli
from tests.conftest import REPO
from tests.in_process import run_main

SCENARIOS = REPO / "configs" / "scenarios"
CLOSED = SCENARIOS / "bench-gpu.yaml"
OPEN = SCENARIOS / "bench-gpu-open.yaml"
FRACTIONS = (0.25, 0.5, 0.75, 0.9)  # of the planner's ceiling, bench-gpu-open.yaml's rates


def planned(scenario: str, capsys: pytest.CaptureFixture[str]) -> dict:
    """`python -m serve plan --config <the scenario's deployment> --scenario S --json`."""
    deployment = str(REPO / load_scenario(scenario).deployment)
    r = run_main(plan_cli.main, ["--config", deployment, "--scenario", scenario, "--json"], capsys)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("path", [CLOSED, OPEN], ids=lambda p: p.name)
def test_the_request_is_one_896px_xray_findings_up_to_300_tokens(path) -> None:
    s = load_scenario(path)
    assert s.images.sizes == [(896, 896)] and s.images.per_request == 1, s.images
    assert s.images.kind == "xray" and s.prompts.tasks == ["findings"], s
    assert (s.max_tokens, s.fixed_output, s.temperature) == (300, False, 0.0)
    cfg = load_config(REPO / s.deployment)
    assert (cfg.gpu_type, cfg.model) == ("h100-80gb", "google/medgemma-1.5-4b-it"), s.deployment


def test_the_closed_loop_reaches_the_configs_batch(capsys) -> None:
    s = load_scenario(CLOSED)
    assert s.load.mode == "closed" and s.load.users == [1, 16, 64, 256], s.load
    plan = planned(str(CLOSED), capsys)
    assert max(s.load.users) == plan["concurrent_requests"] == 256, plan["concurrent_requests"]


@pytest.mark.parametrize("path", [CLOSED, OPEN], ids=lambda p: p.name)
def test_the_slos_are_above_the_planners_pace(path, capsys) -> None:
    s = load_scenario(path)
    ceiling = planned(str(path), capsys)["roofline"]["ceiling"]
    pace_ms = ceiling["token_interval_s"] * 1000
    first_ms = ceiling["compute_s"] * 1000  # the request's vision + prefill
    assert s.slo.tpot_ms is not None and pace_ms < s.slo.tpot_ms <= 30, (pace_ms, s.slo)
    assert s.slo.ttft_ms is not None and first_ms < s.slo.ttft_ms, (first_ms, s.slo)
    assert s.slo.e2e_ms is not None
    assert s.slo.e2e_ms >= s.slo.ttft_ms + (s.max_tokens - 1) * s.slo.tpot_ms, s.slo


def test_the_open_loop_rates_are_fractions_of_the_planners_ceiling(capsys) -> None:
    s = load_scenario(OPEN)
    req_s = planned(str(OPEN), capsys)["roofline"]["ceiling"]["req_s"]
    assert s.load.mode == "open", s.load
    assert s.load.rates == [round(f * req_s, 1) for f in FRACTIONS], (req_s, s.load.rates)
    assert s.load.max_in_flight >= 2 * 256, s.load.max_in_flight
    assert f"{req_s:.1f} req/s" in OPEN.read_text(), "the comment cites the planner's ceiling"
