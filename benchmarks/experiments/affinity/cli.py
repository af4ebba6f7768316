"""`python -m benchmarks affinity`: follow-up TTFT and prefix-cache hits per router policy
(benchmarks/experiments/affinity/__init__.py says how)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from benchmarks.experiments.affinity.figures import REFERENCE
from benchmarks.experiments.affinity.run import POLICIES, run_affinity
from benchmarks.runner.cli import reported
from benchmarks.runner.run import RESULTS
from benchmarks.runner.scenario import load_scenario
from serve.config.replicas import RouterPolicy

DESCRIPTION = (
    "`python -m benchmarks affinity`: follow-up TTFT and prefix-cache hits per router policy."
)


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario", type=Path, default=Path("configs/scenarios/bench-affinity.yaml"),
        help="a scenario whose deployment has a `replicas:` section",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a scenario field (repeatable), e.g. --set load.users=[2]",
    )  # fmt: skip
    p.add_argument("--rounds", type=int, default=3, help="rounds per policy (default 3)")
    p.add_argument(
        "--conversations", type=int, default=8,
        help="new conversations per round and policy (default 8)",
    )  # fmt: skip
    p.add_argument(
        "--policies", nargs="+", choices=get_args(RouterPolicy), default=list(POLICIES),
        metavar="POLICY",
        help=f"router policies, one router each (default: {' '.join(POLICIES)}); the ratio "
        f"column compares each with {REFERENCE} when it is one of them",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS, help="results root folder")


def main(args: argparse.Namespace) -> int:
    return reported(
        lambda: run_affinity(
            load_scenario(args.scenario, args.set),
            args.policies,
            rounds=args.rounds,
            per_round=args.conversations,
            out_root=args.out,
            command=args.command_line,
        )
    )
