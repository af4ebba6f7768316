"""`python -m benchmarks COMMAND`: run a scenario (the runner) or one of the experiments built on
it; `--help` lists the commands, docs/benchmarks.md says what each measures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.runner.errors import BenchError, report
from benchmarks.runner.scenario import Scenario, ScenarioError, load_scenario
from serve.config.yaml_file import describe_fields

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
# Commands with their own parser: command -> (module whose main(argv) runs it, help)
DELEGATED = {
    "overload": ("benchmarks.experiments.overload", "twice the server's queue: shed, not lost"),
    "client-cost": ("benchmarks.experiments.client_cost", "client-side ms to prepare a request"),
    "affinity": (
        "benchmarks.experiments.affinity",
        "follow-up TTFT and prefix-cache hits per vllm-router policy",
    ),
    "compare": ("benchmarks.runner.compare", "two results folders, level by level (B against A)"),
    "study-prep": (
        "benchmarks.experiments.study_prep",
        "seconds to fetch a CT series from a PACS and prepare its slices",
    ),
    "startup-probe": (
        "benchmarks.experiments.startup_probe",
        "start-up seconds with and without the image readiness probe (alternating starts)",
    ),
    "pan-and-scan": (
        "benchmarks.experiments.pan_and_scan",
        "prompt tokens per image with and without pan-and-scan",
    ),
    "fake-endpoint": ("benchmarks.tools.fake_endpoint", "a zero-latency OpenAI endpoint"),
}


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", type=Path, required=True, help="configs/scenarios/*.yaml")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario field (repeatable; dotted keys, YAML values), e.g. "
        "--set load.users=[1,8] --set max_tokens=32",
    )
    p.add_argument("--users", help="shortcut for --set load.users=[...]: e.g. 1,4,16")
    p.add_argument("--duration", type=int, help="shortcut for --set load.duration_s=N")
    p.add_argument("--out", type=Path, default=Path("results"), help="results root folder")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario against a server, write a results folder")
    add_common(run)
    run.add_argument("--base-url", default=DEFAULT_BASE_URL, help="OpenAI API base URL")
    run.add_argument(
        "--start-server",
        action="store_true",
        help="if nothing answers at --base-url, start the scenario's deployment there "
        "(and stop it at the end)",
    )
    base = sub.add_parser(
        "baseline", help="the deployment vs the seed notebook's transformers generate"
    )
    add_common(base)
    base.add_argument(
        "--base-url", help="use this running server (it must be idle) instead of starting one"
    )
    base.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of deployment then seed path, alternated (default 3: A B A B A B)",
    )
    head = sub.add_parser("headroom", help="max req/s of the load generator (fake endpoint)")
    add_common(head)
    head.add_argument("--compare", type=Path, help="a summary.json of a served run to compare")
    agree = sub.add_parser("vllm-bench", help="the same load through vLLM's own benchmark")
    add_common(agree)
    agree.add_argument("--base-url", default=DEFAULT_BASE_URL, help="OpenAI API base URL")
    agree.add_argument("--start-server", action="store_true", help="as for `run`")
    prof = sub.add_parser(
        "profile", help="where the server's CPU goes at one user and at saturation (py-spy)"
    )
    add_common(prof)
    prof.add_argument("--base-url", default=DEFAULT_BASE_URL, help="OpenAI API base URL")
    prof.add_argument("--start-server", action="store_true", help="as for `run`")
    ab = sub.add_parser("ab", help="deployment setting A against B, alternating rounds")
    add_common(ab)
    ab.add_argument("--a", nargs="+", required=True, metavar="KEY=VALUE", help="A's overrides")
    ab.add_argument("--b", nargs="+", required=True, metavar="KEY=VALUE", help="B's overrides")
    ab.add_argument("--c", nargs="+", metavar="KEY=VALUE", help="an optional third variant")
    ab.add_argument("--rounds", type=int, default=3, help="A B rounds (default 3)")
    sub.add_parser("fields", help="list every scenario field with its description")
    for name, (_module, text) in DELEGATED.items():
        s = sub.add_parser(name, help=text, add_help=False)
        s.add_argument("args", nargs=argparse.REMAINDER)
    return p


def needs_images(scenario: Scenario, command: str) -> Scenario:
    """The image + text path is what `profile` and `baseline` measure: refuse text only."""
    if scenario.images.text_only_share >= 1:
        raise ScenarioError(
            f"{command} measures the image + text path, but scenario {scenario.name!r} sends "
            "no images (images.text_only_share: 1)"
        )
    return scenario


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    overrides = list(args.set)
    if args.users:
        overrides.append(f"load.users=[{args.users}]")
    if args.duration is not None:
        overrides.append(f"load.duration_s={args.duration}")
    return load_scenario(args.scenario, overrides)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in DELEGATED:
        import importlib

        module = importlib.import_module(DELEGATED[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    if args.command == "fields":
        print(describe_fields(Scenario))
        return 0
    command = [sys.executable, "-m", "benchmarks", *argv]
    try:
        scenario = scenario_from_args(args)
        if args.command == "run":
            from benchmarks.runner.run import run_benchmark

            result = run_benchmark(
                scenario,
                args.base_url,
                out_root=args.out,
                start_server=args.start_server,
                command=command,
            )
            print(f"results folder: {result.folder}")
        elif args.command == "baseline":
            from benchmarks.experiments.baseline import run_baseline

            run_baseline(
                needs_images(scenario, "baseline"),
                base_url=args.base_url,
                rounds=args.rounds,
                out_root=args.out,
                command=command,
            )
        elif args.command == "profile":
            from benchmarks.experiments.profile import run_profile

            run_profile(
                needs_images(scenario, "profile"),
                args.base_url,
                start_server=args.start_server,
                out_root=args.out,
                command=command,
            )
        elif args.command == "ab":
            from benchmarks.experiments.ab import run_ab

            run_ab(
                scenario,
                args.a,
                args.b,
                args.c,
                rounds=args.rounds,
                out_root=args.out,
                command=command,
            )
        elif args.command == "headroom":
            from benchmarks.experiments.headroom import run_headroom

            run_headroom(scenario, out_root=args.out, compare=args.compare, command=command)
        elif args.command == "vllm-bench":
            from benchmarks.experiments.agreement import run_agreement

            run_agreement(
                scenario,
                args.base_url,
                out_root=args.out,
                start_server=args.start_server,
                command=command,
            )
    except (ScenarioError, BenchError) as exc:
        return report(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
