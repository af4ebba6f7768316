"""Harness headroom: the most image + text req/s the load generator sustains.

Runs the scenario (same workload as a served run: the same encoded images and output
length) against `benchmarks.tools.fake_endpoint`, a zero-latency streaming endpoint, so the
rate reached is the load generator's limit. With --compare SUMMARY.json of a served run,
prints that limit over the served run's best req/s (the target is >= 20x).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.runner.cli import add_scenario_args, reported, scenario_from_args
from benchmarks.runner.errors import BenchError
from benchmarks.runner.run import RESULTS, run_benchmark, served_model
from benchmarks.runner.scenario import Scenario


def start_fake(model: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the fake endpoint on a free port; return it and its base URL once it answers."""
    from serve.process import LaunchError, free_port, wait_until_ready

    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as out:
        cmd = [sys.executable, "-m", "benchmarks", "fake-endpoint", "--port", str(port)]
        proc = subprocess.Popen(
            [*cmd, "--model", model], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        wait_until_ready(
            proc,
            [f"{base_url}/models"],
            timeout_s=30,
            log_path=log,
            name="the fake endpoint",
            interval_s=0.2,
        )
    except LaunchError as exc:
        proc.kill()
        proc.wait(timeout=10)
        raise BenchError(str(exc)) from None
    return proc, base_url


def run_headroom(
    scenario: Scenario,
    *,
    out_root: Path = RESULTS,
    compare: Path | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Max req/s against the fake endpoint; compared with a served run if given."""
    served = None
    if compare is not None:
        try:
            served = json.loads(compare.read_text())["best"]["request_throughput"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"--compare {compare}: not a run's summary.json ({exc})") from None
    model = served_model(scenario)
    out_root.mkdir(parents=True, exist_ok=True)
    log = out_root / "fake-endpoint.log"
    proc, base_url = start_fake(model, log)
    try:
        result = run_benchmark(
            scenario, base_url, out_root=out_root, name=f"{scenario.name}", command=command
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    best = max(s["request_throughput"] for s in result.summary["levels"])
    out: dict[str, Any] = {
        "harness_max_request_throughput": best,
        "user_class": {
            "fast": "FastHttpUser (geventhttpclient)",
            "http": "HttpUser (python-requests)",
        }[scenario.load.user_class],
        "note": result.summary["note"] + " (here: the fake endpoint and the load generator)",
    }
    line = (
        f"harness headroom ({out['user_class']}): {best:.1f} image+text req/s against a "
        "zero-latency endpoint"
    )
    if served:
        out["served_request_throughput"] = served
        out["headroom_ratio"] = round(best / served, 2)
        line += f"; served run: {served:.2f} req/s; headroom ratio: {best / served:.1f}x"
    (result.folder / "headroom.json").write_text(json.dumps(out, indent=2) + "\n")
    print(line + f" ({out['note']})")
    return out


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    add_scenario_args(parser)
    parser.add_argument("--compare", type=Path, help="a summary.json of a served run to compare")


def main(args: argparse.Namespace) -> int:
    """`python -m benchmarks headroom`."""
    return reported(
        lambda: run_headroom(
            scenario_from_args(args),
            out_root=args.out,
            compare=args.compare,
            command=args.command_line,
        )
    )
