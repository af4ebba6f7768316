"""Tests grouped by the server they need, and each server stopped after its last test.

pytest-randomly shuffles the items (modules, then the tests inside each); `order` then
sorts them, stably, by `group`: the tests that need no vLLM server first (unit tests, then
end-to-end ones), then those of each session server in turn (SERVERS), then those that
start servers of their own. Inside a group the shuffled order stays, so any order is still
exercised there; the tests that disturb a shared server (marker `destructive`) run last
in its group, in the order of DISTURBANCES.

A session fixture that starts a server hands its ExitStack to `SESSION.stop_after_last_user`;
`after_test` closes it (in the background) once the last test that uses the fixture is
done, so later tests do not share 2 cores and the memory with an idle server; `join`, at
the session's end, waits for those stops. The fixture's own end of session closes the
stack again, which then does nothing.

In parallel (pytest-xdist, as `make test` runs: see the Makefile), tests/workers.py
keeps each server's tests on one worker, which runs them in this order.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack

import pytest

# The fixtures that start a vLLM server their tests share, in the order their groups run:
# the session's, the verify stand-in's, the launcher's and test_image_cache's.
SERVERS = ("server", "verify_server", "launcher_run", "image_cache_server")
# What a `destructive` test does to the server it shares, in the order such tests run:
# fills test_image_cache's image cache for good; overloads, restarts or stops the launcher.
DISTURBANCES = ("fills", "overloads", "restarts", "stops")


def disturbance(item: pytest.Item) -> int:
    """0 for a test that leaves the shared launcher as it found it; else 1 + the index of
    what its `destructive` marker says it does."""
    mark = item.get_closest_marker("destructive")
    if mark is None:
        return 0
    return 1 + DISTURBANCES.index(mark.args[0] if mark.args else DISTURBANCES[-1])


def group(item: pytest.Item) -> tuple[int, int]:
    """Where an item's group runs, and its place inside the group."""
    names = set(getattr(item, "fixturenames", ()))
    for rank, fixture in enumerate(SERVERS):
        if fixture in names:
            return 2 + rank, disturbance(item)
    if item.get_closest_marker("slow") is not None:  # starts a server of its own
        return 2 + len(SERVERS), 0
    return (0 if "unit" in item.nodeid.split("/") else 1), 0


class Lifetimes:
    """The servers of a session (or of a unit test's pretend session), each stopped after
    the last test that uses its fixture."""

    def __init__(self) -> None:
        self.stacks: dict[str, ExitStack] = {}  # fixture name -> what stops its server(s)
        self.last_user: dict[str, str] = {}  # fixture name -> node id of its last test
        self.stopping: list[threading.Thread] = []

    def order(self, items: list[pytest.Item]) -> None:
        """Sort `items` in place by group (stable) and note each server's last user."""
        items.sort(key=group)
        self.last_user = {
            fixture: item.nodeid
            for item in items
            for fixture in set(getattr(item, "fixturenames", ())) & set(SERVERS)
        }

    def used(self) -> list[str]:
        """The server fixtures some selected test uses, in their groups' order."""
        return [fixture for fixture in SERVERS if fixture in self.last_user]

    def stop_after_last_user(self, fixture: str, stack: ExitStack) -> None:
        """Close `stack` (stopping the fixture's servers) once its last user has run."""
        self.stacks[fixture] = stack

    def after_test(self, item: pytest.Item) -> None:
        """Stop the servers whose last user `item` was, in the background (a vLLM server
        takes ~5 s to stop; the next tests need not wait); the fixture's own stack is left
        empty, so its end of session stops nothing twice."""
        for fixture, last in self.last_user.items():
            if last == item.nodeid and fixture in self.stacks:
                detached = self.stacks.pop(fixture).pop_all()
                thread = threading.Thread(target=detached.close, name=f"stop-{fixture}")
                thread.start()
                self.stopping.append(thread)

    def join(self) -> None:
        """Wait until every server stopped in the background is."""
        for thread in self.stopping:
            thread.join()
        self.stopping.clear()


SESSION = Lifetimes()  # this test session's (tests/conftest.py, tests/e2e/conftest.py)
