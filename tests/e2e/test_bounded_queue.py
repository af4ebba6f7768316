"""Overload, short CI variant: `python -m benchmarks overload` at twice the server's queue
bound for 20 s against the session's `launcher` (max_num_queued_reqs=16). Every request
ends in a completion or an explicit 503 with a reason, none runs past its timeout, /health
answers 200 throughout, a normal request is served afterwards, and the RSS figures are
recorded. It fills the queue (503s an alert would count), so it runs after the launcher's
other tests (`destructive`). The full run (64 users, 3 minutes) is `make`-free:
`python -m benchmarks overload --scenario configs/scenarios/bench-overload.yaml --start-server`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.launcher import LiveServer

pytestmark = pytest.mark.slow


@pytest.mark.destructive("overloads")
def test_overload_ends_every_request_in_a_completion_or_an_explicit_503(
    launcher: LiveServer, tmp_path: Path
) -> None:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "overload",
        "--scenario",
        "configs/scenarios/bench-overload.yaml",
    ]
    cmd += ["--base-url", launcher.base_url, "--out", str(tmp_path)]
    for override in (
        "load.users=[32]",
        "load.duration_s=20",
        "load.warmup_s=2",
        "max_tokens=16",
        "images.sizes=[[256, 256]]",
        "request_timeout_s=60",
    ):
        cmd += ["--set", override]
    env = launcher.client_env()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (overload_json,) = tmp_path.glob("*/overload.json")
    n = json.loads(overload_json.read_text())

    assert n["requests_sent"] == n["completed"] + n["errored"] and n["completed"] > 0, n
    # The bound engaged, and every refusal is a 503 that says why (streamed or not).
    assert n["errored"] > 0, n
    for kind in n["errors_by_kind"]:
        assert kind.startswith("503: the server is at capacity"), n["errors_by_kind"]
    assert n["max_latency_s"] < n["request_timeout_s"], n
    assert n["health_samples_during"] >= 10 and n["health_not_200_during"] == 0, n
    assert n["normal_request_after"]["status"] == 200, n["normal_request_after"]
    assert n["rss_mib_before"] and n["rss_mib_peak_during"] and n["rss_mib_after"], n
    print("\noverload (short):", json.dumps({k: v for k, v in n.items() if k != "note"}))
