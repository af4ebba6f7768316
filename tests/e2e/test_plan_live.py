"""The capacity planner against the real server: the KV cache size and maximum concurrency
vLLM logs at start-up for the session's server (configs/deployments/cpu-tiny.yaml) agree with
`python -m serve plan` within 10%."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serve.command.argv import for_host
from serve.config.deployment import load_config
from serve.host import host_cpu
from serve.plan.inputs import shape_for_config
from serve.plan.planner import RequestShape, make_plan
from tests.conftest import CONFIGS, REPO
from tests.e2e.launcher import LiveServer

# e.g. "CPU KV cache size: 1,959,382 tokens, Maximum concurrency for 4,096 tokens per
# request: 478.36x"
KV_LINE = re.compile(
    r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: "
    r"([\d.]+)x"
)


def vllm_reported(server: LiveServer) -> tuple[int, int, float]:
    if server.log_path is None:
        pytest.skip("the server was started outside this session: its start-up log is not ours")
    found = KV_LINE.findall(server.log_path.read_text(errors="replace"))
    assert found, f"no KV cache line in {server.log_path}"
    tokens, max_len, concurrency = found[-1]  # the log is appended to: the last start wins
    return int(tokens.replace(",", "")), int(max_len.replace(",", "")), float(concurrency)


def within(planned: float, measured: float, tolerance: float = 0.10) -> bool:
    return abs(planned - measured) <= tolerance * measured


def test_planner_agrees_with_the_servers_start_up_log(
    server: LiveServer, tiny_model_dir: Path
) -> None:
    tokens, max_len, concurrency = vllm_reported(server)
    cfg = for_host(
        load_config(CONFIGS / "cpu-tiny.yaml", {"model": str(tiny_model_dir)}),
        host_cpu()["flags"],
    )
    plan = make_plan(cfg, shape_for_config(cfg), None, RequestShape())
    evidence = (
        f"vLLM: {tokens:,} tokens, {concurrency}x at {max_len:,}; planner: "
        f"{plan.vllm_kv_tokens:,} tokens, {plan.vllm_max_concurrency:.2f}x at "
        f"{plan.max_model_len:,}"
    )
    assert plan.max_model_len == max_len, evidence
    assert within(plan.vllm_kv_tokens, tokens), evidence
    assert within(plan.vllm_max_concurrency, concurrency), evidence


def test_plan_cli_prints_the_same_figures(server: LiveServer, tiny_model_dir: Path) -> None:
    tokens, _max_len, concurrency = vllm_reported(server)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "serve",
            "plan",
            "--config",
            str(CONFIGS / "cpu-tiny.yaml"),
            "--set",
            f"model={tiny_model_dir}",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["device"] == "cpu" and data["fits"], data
    assert within(data["vllm_kv_tokens"], tokens), (data["vllm_kv_tokens"], tokens)
    assert within(data["vllm_max_concurrency"], concurrency), (data, concurrency)


def test_planner_agrees_with_the_servers_metrics(server: LiveServer, tiny_model_dir: Path) -> None:
    """vLLM also publishes its cache sizing as labels of vllm:cache_config_info on /metrics
    (this works against an external server too)."""
    text = httpx.get(server.url_for("metrics"), timeout=30).text
    line = next((ln for ln in text.splitlines() if ln.startswith("vllm:cache_config_info{")), "")
    labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
    assert "num_gpu_blocks" in labels, f"no cache_config_info labels in /metrics: {line!r}"
    cfg = for_host(
        load_config(CONFIGS / "cpu-tiny.yaml", {"model": str(tiny_model_dir)}),
        host_cpu()["flags"],
    )
    plan = make_plan(cfg, shape_for_config(cfg), None, RequestShape())
    evidence = f"/metrics: {labels}; planner: {plan}"
    assert int(labels["block_size"]) == plan.block_size, evidence
    assert within(plan.num_blocks, int(labels["num_gpu_blocks"])), evidence
    assert within(plan.vllm_kv_tokens, int(labels["kv_cache_size_tokens"])), evidence
    assert within(plan.vllm_max_concurrency, float(labels["kv_cache_max_concurrency"])), evidence
