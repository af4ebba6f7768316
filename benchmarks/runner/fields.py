"""`python -m benchmarks fields`: every scenario field with its description."""

from __future__ import annotations

import argparse

from benchmarks.runner.scenario import Scenario
from serve.config.yaml_file import describe_fields


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    """No options."""


def main(args: argparse.Namespace) -> int:
    print(describe_fields(Scenario))
    return 0
