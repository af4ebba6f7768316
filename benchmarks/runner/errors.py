"""The one error type of the benchmark tools: a message for the person running them."""

from __future__ import annotations

import sys

from serve.config.yaml_file import ConfigError


class BenchError(RuntimeError):
    """A benchmark cannot run or went wrong; the message says why and what to do."""


def report(exc: BenchError | ConfigError) -> int:
    """Print a benchmark command's one `error:` line; return its exit status: 2 for a
    scenario or config that does not load (a usage error), 1 for everything else."""
    print(f"error: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, ConfigError) else 1
