"""The one error type of the benchmark tools: a message for the person running them."""

from __future__ import annotations


class BenchError(RuntimeError):
    """A benchmark cannot run or went wrong; the message says why and what to do."""
