"""Session servers started ahead of the tests that need them.

A serial run spends its first minutes on tests that need no vLLM server (unit tests, then
the end-to-end ones without one: tests/grouping.py), which keep one of the two cores busy.
A server's start-up (about 30 s on that machine, mostly one core importing torch and vLLM
in three processes in turn) can run on the other meanwhile. So at the first test
(tests/conftest.py) `AHEAD.begin_planned` starts, one after another in one background
thread, the planned session servers (`plan`, from tests/e2e/conftest.py) that some selected
test uses, in their groups' order; the server's fixture then `take`s the running server
instead of starting one, and its life goes on as before (stopped after its last user).
At most four started ahead are alive at once (each holds about 3.2 GiB: with all four up
the run used 13-14 GiB of 24): a fifth would begin when an earlier one stops.

Not under xdist: there each worker starts what it needs when it needs it. A start-up that
failed in the background fails the fixture that takes it, with the same message.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from serve.process import LaunchError

# What a planned start gets: the session's tmp_path_factory; what it does: enter the
# server's context on the ExitStack it is given, and return what its fixture hands out.
Start = Callable[[ExitStack], Any]
Plan = Callable[[pytest.TempPathFactory], Start]
SLOT_WAIT_S = 1800


@dataclass(frozen=True)
class Started:
    """A server started ahead: what stops it, what its fixture hands out, and when."""

    stack: ExitStack
    value: Any
    began: float  # time.monotonic() when its start-up began
    ready: float  # ... and when it was ready


class Ahead:
    """The session servers started in the background before their first user runs."""

    def __init__(self, alive: int) -> None:
        self.plans: dict[str, Plan] = {}  # fixture name -> how to start its server
        self.pending: dict[str, Future[Started]] = {}
        self.pool: ThreadPoolExecutor | None = None
        # At most `alive` started ahead and not yet stopped: each holds ~3.2 GiB.
        self.slots = threading.Semaphore(alive)

    def plan(self, fixture: str, plan: Plan) -> None:
        """Say how to start `fixture`'s server ahead (at import of its conftest)."""
        self.plans[fixture] = plan

    def begin_planned(self, used: Iterable[str], factory: pytest.TempPathFactory) -> None:
        """Start, in order, the planned servers among the fixtures in `used` (those with a
        selected user, in their groups' order); nothing under xdist or when already begun."""
        if os.environ.get("PYTEST_XDIST_WORKER") or self.pool is not None:
            return
        names = [name for name in used if name in self.plans]
        if not names:
            return
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ahead")
        for name in names:
            self.pending[name] = self.pool.submit(self.started, self.plans[name](factory))

    def take(self, fixture: str, stack: ExitStack) -> Started | None:
        """The server started ahead for `fixture`, once ready (its stopping now on `stack`),
        or None if none was: the fixture then starts its own. Raises what its start-up
        raised."""
        future = self.pending.pop(fixture, None)
        if future is None:
            return None
        got = future.result()
        stack.push(got.stack)
        return got

    def started(self, start: Start) -> Started:
        """Once fewer than `alive` are, run `start` on a fresh ExitStack that frees the slot
        when it closes (closed again if the start-up fails). Servers start in their groups'
        order and each stops after its group, so the one a fixture waits for is never
        behind one that waits for it; after SLOT_WAIT_S it starts anyway."""
        got_slot = self.slots.acquire(timeout=SLOT_WAIT_S)
        stack = ExitStack()
        if got_slot:
            stack.callback(self.slots.release)
        began = time.monotonic()
        try:
            value = start(stack)
        except BaseException:
            stack.close()
            raise
        return Started(stack, value, began, time.monotonic())

    def close(self) -> None:
        """Stop what was started but never taken (a run that ended early)."""
        for future in self.pending.values():
            if not future.cancel() and future.exception() is None:
                future.result().stack.close()
        self.pending.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def bring_up(stack: ExitStack, fixture: str, what: str, start: Start) -> Any:
    """`fixture`'s server: the one started ahead, else one started now by `start`; its
    stopping goes on `stack`. A start-up failure fails the test, without a traceback, with
    the server's own words."""
    t0 = time.monotonic()
    try:
        ahead = AHEAD.take(fixture, stack)
        value = ahead.value if ahead else start(stack)
    except LaunchError as exc:
        pytest.fail(f"{what} did not start: {exc}", pytrace=False)
    waited = time.monotonic() - t0
    if ahead:
        took = ahead.ready - ahead.began
        print(f"\n{what} ready: started ahead in {took:.1f} s, waited {waited:.1f} s for it")
    else:
        print(f"\n{what} ready in {waited:.1f} s")
    return value


AHEAD = Ahead(alive=4)  # this test session's
