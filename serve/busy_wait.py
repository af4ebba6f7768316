"""The vLLM general plugin `medgemma_busy_wait` (pyproject.toml's entry point in
`vllm.general_plugins`, run in vLLM's API server, engine core and workers): how vLLM's
shared-memory readers wait for their next message.

vLLM's worker reads each step from a shared-memory queue, and its engine core reads each
step's output from another. After a read the reader spins (`sched_yield` in a loop) for
1 s (vLLM 0.32: `SpinCondition.busy_loop_s`; no flag or variable sets it), then parks on
a socket the writer pings, re-reading the queue every 5 s. On a GPU host the spin buys
latency with a spare core. A small CPU host has no spare core: while a server serves, its
worker spins between steps and its engine core while the worker computes, taking the
cores from the processes doing the work they wait for (a whole-suite run on 2 cores:
1,127 s of CPU in the workers and 406 s in the engine cores; 818 s and 213 s with naps).

Parking sooner is no way out: with a shorter spin the server stalled (0.2 generated
tokens/s), as if the writer's pings were lost and the reader woke only at its 5 s
re-read (not traced further). So MEDGEMMA_BUSY_WAIT_S (from the config's `busy_wait_s`,
serve.command.argv) shortens the spin, and for the rest of vLLM's 1 s the reader naps
NAP_S between looks at the queue: a step waits at most NAP_S longer, and a nap leaves
the core to the others. Past the 1 s, vLLM's own wait. Unset: vLLM's own spin. Only on
the vLLM versions whose internals this was written against
(serve.attention.support.WRITTEN_FOR).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from serve.attention.support import WRITTEN_FOR

BUSY_WAIT_ENV = "MEDGEMMA_BUSY_WAIT_S"
NAP_S = 0.0005  # between looks at the queue, after the spin; a decode step here is ~7 ms


def busy_wait_s(environ: Mapping[str, str]) -> float | None:
    """The spin the environment asks for (seconds, >= 0), or None: vLLM's own."""
    raw = environ.get(BUSY_WAIT_ENV, "").strip()
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


def naps(since_read_s: float, spin_s: float, vllm_spin_s: float) -> bool:
    """Whether a reader naps `since_read_s` after its last read (pure): past its own spin
    and within vLLM's. Otherwise vLLM's own wait: its spin, or, past it, its parking."""
    return spin_s < since_read_s <= vllm_spin_s


def nap() -> None:
    """One nap between looks at the queue."""
    time.sleep(NAP_S)


def with_naps(wait: Callable[..., None], spin_s: float) -> Callable[..., None]:
    """SpinCondition.wait with a spin of `spin_s`, then naps up to vLLM's own spin."""

    @functools.wraps(wait)
    def nap_wait(self: Any, timeout_ms: int | None = None) -> None:
        if naps(time.monotonic() - self.last_read, spin_s, self.busy_loop_s):
            nap()
        else:
            wait(self, timeout_ms)

    nap_wait.medgemma_spin_s = spin_s  # type: ignore[attr-defined]
    return nap_wait


def register() -> None:
    """vLLM's entry point: readers spin MEDGEMMA_BUSY_WAIT_S, then nap (see above)."""
    spin_s = busy_wait_s(os.environ)
    if spin_s is None:
        return
    import vllm

    if vllm.__version__ not in WRITTEN_FOR:
        return
    from vllm.distributed.device_communicators import shm_broadcast

    condition = shm_broadcast.SpinCondition
    if getattr(condition.wait, "medgemma_spin_s", None) is None:
        condition.wait = with_naps(condition.wait, spin_s)  # type: ignore[method-assign]
