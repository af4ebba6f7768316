"""A command line run in the test's own process: `main(argv)` with its output captured.

For the tests of what a command prints and the code it exits with, where a subprocess would
only add seconds of imports (torch, vLLM) to each test. The tests about the real process
(signals, a real server, the documented command as a user types it) keep the subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence

import pytest


def run_main(
    main: Callable[[list[str]], int | None],
    argv: Sequence[str],
    capsys: pytest.CaptureFixture[str],
) -> subprocess.CompletedProcess[str]:
    """`main(argv)` as `subprocess.run(..., capture_output=True, text=True)` would report
    it: the exit code (argparse's SystemExit included), stdout and stderr."""
    capsys.readouterr()  # what the test printed before is not the command's
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse errors, --help
        code = exc.code if isinstance(exc.code, int) or exc.code is None else 1
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(argv), int(code or 0), out, err)
