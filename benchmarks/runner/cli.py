"""What the commands of `python -m benchmarks` share: the scenario options (--scenario,
--set, --users, --duration, --out), the server options (--base-url, --start-server), the
scenario they name, and the one-line error report.

Every command is a module with `add_cli_args(parser)` and `main(args) -> int`, registered
in benchmarks/__main__.py; `args.command_line` is the command as typed (command.txt).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.runner.errors import BenchError, report
from benchmarks.runner.scenario import Scenario, ScenarioError, load_scenario
from serve.process import LaunchError

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def add_scenario_args(p: argparse.ArgumentParser) -> None:
    """--scenario (required), --set, --users, --duration, --out: the runner's commands."""
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


def add_server_args(p: argparse.ArgumentParser) -> None:
    """--base-url and --start-server: the server a scenario's load goes to."""
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help="OpenAI API base URL")
    p.add_argument(
        "--start-server",
        action="store_true",
        help="if nothing answers at --base-url, start the scenario's deployment there "
        "(and stop it at the end)",
    )


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The scenario file with --set, then the --users and --duration shortcuts, applied.
    Raises ScenarioError."""
    overrides = list(args.set)
    if args.users:
        overrides.append(f"load.users=[{args.users}]")
    if args.duration is not None:
        overrides.append(f"load.duration_s={args.duration}")
    return load_scenario(args.scenario, overrides)


def needs_images(scenario: Scenario, command: str) -> Scenario:
    """The image + text path is what `profile` and `baseline` measure: refuse text only."""
    if scenario.images.text_only_share >= 1:
        raise ScenarioError(
            f"{command} measures the image + text path, but scenario {scenario.name!r} sends "
            "no images (images.text_only_share: 1)"
        )
    return scenario


def reported(run: Callable[[], object]) -> int:
    """Call `run`: 0, or a refused scenario or failed benchmark as one `error:` line (its
    exit code), or 130 on Ctrl-C."""
    try:
        run()
    except (ScenarioError, BenchError) as exc:
        return report(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def module_main(
    module: str,
    add_cli_args: Callable[[argparse.ArgumentParser], None],
    main: Callable[[argparse.Namespace], int],
    description: str | None = None,
) -> int:
    """`python -m MODULE ARGS` for a command module that is also run on its own."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    add_cli_args(p)
    args = p.parse_args()
    args.command_line = [sys.executable, "-m", module, *sys.argv[1:]]
    try:
        return main(args)
    except LaunchError as exc:  # what the command did not catch itself: one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
