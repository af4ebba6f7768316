"""Agreement with vLLM's own benchmark: the same load measured by both tools, side by side.

For each concurrency level of the scenario, this harness runs first (Locust, closed loop,
warm-up excluded), then vLLM's `vllm bench serve` logic (openai-chat backend, random-mm
dataset) with the same image size and count, output length (ignore_eos), temperature
and concurrency, and as many requests as this harness completed at that level. Both hit
the same server. It prints and writes request throughput, output throughput and median
TTFT from both, with the relative differences (the target: within 10%).

vLLM's run is closed at a fixed number of requests (all start at once, the last ones run
with the batch draining), Locust's is time-boxed with a warm-up cut; more requests per
level make the two closer.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.experiments.baseline import model_folder
from benchmarks.runner import preflight
from benchmarks.runner.cli import (
    add_scenario_args,
    add_server_args,
    reported,
    scenario_from_args,
)
from benchmarks.runner.errors import BenchError
from benchmarks.runner.run import RESULTS, cpu_note, run_benchmark, served_model, with_seed
from benchmarks.runner.scenario import Scenario


def check_comparable(scenario: Scenario) -> tuple[int, int]:
    """The (width, height) of the scenario's images, if vLLM's random-mm can match it."""
    mix = scenario.images
    problems = []
    if len(mix.sizes) != 1:
        problems.append("one image size")
    if mix.kind != "noise":
        problems.append("images.kind: noise (random-mm's i.i.d. pixels)")
    if mix.dicom_share or mix.text_only_share:
        problems.append("no DICOM or text-only requests")
    if scenario.load.mode != "closed":
        problems.append("load.mode: closed (vLLM's --max-concurrency)")
    if problems:
        raise BenchError(
            f"vllm-bench compares random-mm workloads only; needs {', '.join(problems)}"
        )
    return mix.sizes[0]


def vllm_command(
    scenario: Scenario, base_url: str, model: str, tokenizer: Path, users: int, n: int, out: Path
) -> list[str]:
    """`vllm bench serve` flags reproducing the scenario at one concurrency level."""
    width, height = scenario.images.sizes[0]
    k = scenario.images.per_request
    cmd = [
        sys.executable, "-m", "benchmarks.tools.vllm_bench",
        "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
        "--base-url", preflight.root_url(base_url), "--model", model, "--tokenizer", str(tokenizer),
        "--dataset-name", "random-mm",
        "--random-mm-bucket-config", f"{{({height}, {width}, 1): 1.0}}",
        "--random-mm-base-items-per-request", str(k), "--random-mm-num-mm-items-range-ratio", "0",
        "--random-mm-limit-mm-per-prompt", json.dumps({"image": k, "video": 0}),
        "--random-input-len", "8", "--random-output-len", str(scenario.max_tokens),
        "--num-prompts", str(n), "--max-concurrency", str(users),
        "--temperature", f"{scenario.temperature:g}", "--seed", str(scenario.seed or 0),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
        "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name,
        "--disable-tqdm",
    ]  # fmt: skip
    if scenario.fixed_output:
        cmd.append("--ignore-eos")
    return cmd


def diff(ours: float, theirs: float) -> float:
    """Relative difference of ours from vLLM's, in percent."""
    return round(100 * (ours - theirs) / theirs, 1) if theirs else float("inf")


def run_agreement(
    scenario: Scenario,
    base_url: str,
    *,
    out_root: Path = RESULTS,
    start_server: bool = False,
    command: list[str] | None = None,
) -> list[dict[str, Any]]:
    check_comparable(scenario)
    scenario = with_seed(scenario)
    model = served_model(scenario)
    tokenizer, _ = model_folder(scenario.deployment)
    env = dict(os.environ)
    if key := os.environ.get(scenario.api_key_env):
        env["OPENAI_API_KEY"] = key  # how vLLM's benchmark sends a Bearer token
    rows = []
    with preflight.server_for(scenario, base_url, start_server):
        ours = run_benchmark(scenario, base_url, out_root=out_root, command=command)
        for level in ours.levels:
            users = int(level.level)
            n = max(level.summary["completed"], 2 * users)
            out = ours.folder / f"vllm-bench-users-{users}.json"
            cmd = vllm_command(scenario, base_url, model, tokenizer, users, n, out)
            print(f"vLLM's benchmark at {users} users, {n} requests ...", flush=True)
            log = out.with_suffix(".log")
            with log.open("w") as f:
                f.write(shlex.join(cmd) + "\n")
                f.flush()
                proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
            if proc.returncode != 0 or not out.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:])
                raise BenchError(f"vLLM's benchmark failed ({proc.returncode}); {log}:\n{tail}")
            theirs = json.loads(out.read_text())
            s = level.summary
            rows.append({
                "users": users,
                "requests": {"ours": s["completed"], "vllm": theirs["completed"]},
                "request_throughput": {"ours": s["request_throughput"],
                                       "vllm": round(theirs["request_throughput"], 4)},
                "output_throughput": {"ours": s["output_throughput"],
                                      "vllm": round(theirs["output_throughput"], 3)},
                "median_ttft_ms": {"ours": s["ttft_ms"]["p50"],
                                   "vllm": round(theirs["median_ttft_ms"], 3)},
                "vllm_failed": theirs.get("failed", 0),
            })  # fmt: skip
            for key in ("request_throughput", "output_throughput", "median_ttft_ms"):
                rows[-1][key]["diff_pct"] = diff(rows[-1][key]["ours"], rows[-1][key]["vllm"])
    note = cpu_note(base_url)
    (ours.folder / "agreement.json").write_text(
        json.dumps({"note": note, "levels": rows}, indent=2)
    )
    for r in rows:
        parts = [
            f"{label} ours {r[key]['ours']:.3f} vs vLLM {r[key]['vllm']:.3f} "
            f"({r[key]['diff_pct']:+.1f}%)"
            for key, label in (
                ("request_throughput", "req/s"),
                ("output_throughput", "output tok/s"),
                ("median_ttft_ms", "median TTFT ms"),
            )
        ]
        print(f"users {r['users']}: " + "; ".join(parts))
    print(f"({note}); results: {ours.folder}")
    return rows


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    add_scenario_args(parser)
    add_server_args(parser)


def main(args: argparse.Namespace) -> int:
    """`python -m benchmarks vllm-bench`."""
    return reported(
        lambda: run_agreement(
            scenario_from_args(args),
            args.base_url,
            out_root=args.out,
            start_server=args.start_server,
            command=args.command_line,
        )
    )
