"""`python -m benchmarks ab`: is deployment setting B faster than A? Alternating rounds.

    python -m benchmarks ab --scenario configs/scenarios/bench-baseline.yaml \\
        --a dtype=bfloat16 --b dtype=float32 [--rounds 3]

Starts the scenario's deployment once per variant (A's overrides, B's, and C's if --c is
given; each on a free port, logs in logs/), keeps them all up, and loads one at a time:
A B A B A B (A B C ...). An idle server waits without taking CPU. Each round draws new
images (seed + round) so that no round is served from a cache. Prints every round's best
output tok/s and req/s per variant, then `B/A: N.NNx (median of the rounds' ratios; min,
max)` (and C/A), and writes ab.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.runner import preflight
from benchmarks.runner.cli import add_scenario_args, reported, scenario_from_args
from benchmarks.runner.errors import BenchError
from benchmarks.runner.machine import machine_state
from benchmarks.runner.metrics import spread
from benchmarks.runner.run import RESULTS, cpu_note, new_folder, run_benchmark, with_seed
from benchmarks.runner.scenario import Scenario, to_yaml


def parse_variant(items: list[str]) -> dict[str, Any]:
    """`key=value` strings (YAML values, dotted keys) -> overrides of the deployment config."""
    from serve.config.yaml_file import ConfigError, parse_override

    out: dict[str, Any] = {}
    for item in items:
        try:
            path, value = parse_override(item)
        except ConfigError as exc:
            raise BenchError(str(exc)) from None
        out[".".join(path)] = value
    return out


def run_ab(
    scenario: Scenario,
    a: list[str],
    b: list[str],
    c: list[str] | None = None,
    *,
    rounds: int = 3,
    out_root: Path = RESULTS,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Start A and B, alternate their runs for `rounds` rounds, write and return ab.json."""
    from serve.config.yaml_file import override_strings
    from serve.launch.server import ServerProcess
    from serve.process import free_port

    if rounds < 1:
        raise BenchError(f"--rounds must be at least 1 (got {rounds})")
    variants = {"A": parse_variant(a), "B": parse_variant(b)}
    if c:
        variants["C"] = parse_variant(c)
    if variants["A"] == variants["B"] or variants.get("C") in (variants["A"], variants["B"]):
        raise BenchError("A and B are the same deployment: give each variant different settings")
    scenario = with_seed(scenario)
    parent = new_folder(out_root, f"{scenario.name}-ab")
    (parent / "scenario.yaml").write_text(to_yaml(scenario))
    servers: dict[str, ServerProcess] = {}
    try:
        for name, overrides in variants.items():
            servers[name] = preflight.start_deployment(
                scenario,
                free_port(),
                override_strings(overrides),
                what=f"variant {name}",
                log_name=f"ab-{name}",
            )
        results: list[dict[str, Any]] = []
        for r in range(1, rounds + 1):
            row: dict[str, Any] = {"round": r}
            for name, server in servers.items():
                round_scenario = scenario.model_copy(update={"seed": (scenario.seed or 0) + r})
                state = machine_state()
                served = run_benchmark(
                    round_scenario, server.base_url, out_root=parent,
                    name=f"round{r}-{name}", command=command, quiet=True,
                )  # fmt: skip
                best = served.summary["best"]
                row[name] = {**best, "folder": str(served.folder), "machine": state}
                print(
                    f"round {r} {name}: {best['output_throughput']:.1f} output tok/s, "
                    f"{best['request_throughput']:.2f} req/s at {best['level']:g} users "
                    f"(load average {state['loadavg'][0]:.2f})",
                    flush=True,
                )
            a_tok = row["A"]["output_throughput"]
            for name in servers:
                if name != "A":
                    tok = row[name]["output_throughput"]
                    row[f"{name}/A"] = round(tok / a_tok, 3) if a_tok else None
            results.append(row)
    finally:
        for server in servers.values():
            server.stop()
    ratios = {
        f"{name}/A": spread([row[f"{name}/A"] for row in results])
        for name in variants
        if name != "A"
    }
    out = {
        "note": cpu_note("http://127.0.0.1"),
        "variants": variants,
        "rounds": results,
        "ratios": ratios,
        "cpu": machine_state(),
    }
    (parent / "ab.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"{out['note']}; results in {parent}")
    if any(x["median"] is None for x in ratios.values()):
        raise BenchError(f"no round completed a request on A; see {parent}")
    for name, x in ratios.items():
        print(
            f"{name}: {x['median']:.2f}x (median of {x['rounds']} rounds; "
            f"min {x['min']:.2f}, max {x['max']:.2f})"
        )
    return out


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    add_scenario_args(parser)
    parser.add_argument("--a", nargs="+", required=True, metavar="KEY=VALUE", help="A's overrides")
    parser.add_argument("--b", nargs="+", required=True, metavar="KEY=VALUE", help="B's overrides")
    parser.add_argument("--c", nargs="+", metavar="KEY=VALUE", help="an optional third variant")
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds (default 3)")


def main(args: argparse.Namespace) -> int:
    """`python -m benchmarks ab`."""
    return reported(
        lambda: run_ab(
            scenario_from_args(args),
            args.a,
            args.b,
            args.c,
            rounds=args.rounds,
            out_root=args.out,
            command=args.command_line,
        )
    )
