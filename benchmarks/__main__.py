"""`python -m benchmarks COMMAND`: run a scenario (the runner) or one of the experiments built on
it; `--help` lists the commands, docs/benchmarks.md says what each measures."""

from __future__ import annotations

import argparse
import importlib
import sys

from serve.process import LaunchError

# Every command: name -> (its module, one line of help). A command's module has
# `add_cli_args(parser)` and `main(args) -> int` (and may set DESCRIPTION, the text of
# `COMMAND --help`; else the help line is). Only the named command's module is imported.
COMMANDS = {
    "run": (
        "benchmarks.runner.run",
        "run a scenario against a server, write a results folder",
    ),
    "baseline": (
        "benchmarks.experiments.baseline",
        "the deployment vs the seed notebook's transformers generate",
    ),
    "headroom": (
        "benchmarks.experiments.headroom",
        "max req/s of the load generator (fake endpoint)",
    ),
    "vllm-bench": (
        "benchmarks.experiments.agreement",
        "the same load through vLLM's own benchmark",
    ),
    "profile": (
        "benchmarks.experiments.profile",
        "where the server's CPU goes at one user and at saturation (py-spy)",
    ),
    "ab": ("benchmarks.experiments.ab", "deployment setting A against B, alternating rounds"),
    "fields": ("benchmarks.runner.fields", "list every scenario field with its description"),
    "overload": ("benchmarks.experiments.overload", "twice the server's queue: shed, not lost"),
    "client-cost": ("benchmarks.experiments.client_cost", "client-side ms to prepare a request"),
    "affinity": (
        "benchmarks.experiments.affinity.cli",
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
    "volumes": (
        "benchmarks.experiments.volumes",
        "a follow-up question on the same CT volume against its first (rounds, caches)",
    ),
    "fake-endpoint": ("benchmarks.tools.fake_endpoint", "a zero-latency OpenAI endpoint"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command with its help line; `command`'s options too (its module imported), so
    the other commands' dependencies are not loaded."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, (module_name, text) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=text)
            continue
        module = importlib.import_module(module_name)
        s = sub.add_parser(name, help=text, description=getattr(module, "DESCRIPTION", text))
        module.add_cli_args(s)
        s.set_defaults(main=module.main)
    return p


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    args.command_line = [sys.executable, "-m", "benchmarks", *argv]
    try:
        return int(args.main(args))
    except LaunchError as exc:  # what a command did not catch itself: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
