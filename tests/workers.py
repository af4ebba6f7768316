"""Which tests share a worker when the suite runs in parallel (pytest-xdist).

`make test` runs `pytest -n 2 --dist loadgroup --no-loadscope-reorder`: xdist gives each
worker whole groups (the tests with the same `xdist_group` mark, in tests/grouping.py's
order) and the other tests one at a time, the costliest first (`longest_first`). `mark` puts
the tests that share an expensive fixture in one group: a session server (grouping.SERVERS)
or a fixture built once per module or class (the module's tests), joined: a test that uses
two of them merges their groups into one. So each server starts on one worker only, and that
worker runs all of its users in grouping's order, destructive ones last: the server's last
user in the collection is the last one that worker runs of them, and `SESSION.after_test`
stops the server after it, as in a serial run. The tests marked `all_cores` (their servers
compute on both cores: tensor parallel 2, two replicas) form one group too, so no two of
them overlap. What is cheap stays per worker: Orthanc (`pacs`, about 3 s) and the stand-in
model (built once, under a lock).
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from tests.grouping import SERVERS

PER_MODULE = ("module", "class")  # fixture scopes whose value the module's tests share
# The marker of a test whose servers compute on every core, and the group of those tests: in
# a clean-clone run (2026-12-07, N1) the TP=2 test overlapped Ray's TP=2 on the other worker,
# four ranks on two cores, and took 179 s against 69-88 s in three runs where it did not.
ALL_CORES = "all_cores"
# Guesses of a test's seconds on 2 cores, to hand out the longest work first (`longest_first`):
# a `slow` test says its own (`@pytest.mark.slow(seconds=N)`) or takes SLOW_S; a group of
# tests sharing a server adds the server's start.
UNIT_S, E2E_S, SLOW_S, START_S = 0.1, 3.0, 30.0, 40.0


def shared(item: pytest.Item) -> set[str]:
    """The expensive fixtures `item` shares with other tests: server fixture names, and its
    module's node id if it uses a fixture built once per module or class; and ALL_CORES if
    it is marked so (the cores are then what it shares)."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs if info is not None else {}
    keys: set[str] = {ALL_CORES} if item.get_closest_marker(ALL_CORES) else set()
    for name in getattr(item, "fixturenames", ()):
        if name in SERVERS:
            keys.add(name)
        elif (defs := definitions.get(name)) and defs[-1].scope in PER_MODULE:
            keys.add(item.nodeid.split("::")[0])
    return keys


def groups(sharing: Iterable[set[str]]) -> list[str | None]:
    """For each test (the keys it shares), the name of its group, or None: tests that share
    a key, directly or through others, get the same name (the group's first server in
    SERVERS' order, else its first key in sorted order)."""
    sharing = list(sharing)
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for keys in sharing:
        ordered = sorted(keys)
        for key in ordered:
            parent[root(key)] = root(ordered[0])
    members: dict[str, list[str]] = {}
    for key in list(parent):
        members.setdefault(root(key), []).append(key)

    def name(keys: set[str]) -> str | None:
        if not keys:
            return None
        together = members[root(next(iter(keys)))]
        servers = [s for s in SERVERS if s in together]
        return servers[0] if servers else min(together)

    return [name(keys) for keys in sharing]


def mark(items: list[pytest.Item]) -> None:
    """Mark each test that shares an expensive fixture with its `xdist_group`."""
    for item, group in zip(items, groups(map(shared, items)), strict=True):
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def cost(item: pytest.Item) -> float:
    """A guess at `item`'s seconds (see UNIT_S)."""
    slow = item.get_closest_marker("slow")
    if slow is not None:
        return float(slow.kwargs.get("seconds", SLOW_S))
    return UNIT_S if "unit" in item.nodeid.split("/") else E2E_S


def longest_first(items: list[pytest.Item]) -> None:
    """Reorder `items` in place by work unit (an xdist_group's tests together, in their
    order; any other test alone), the costliest unit first, stably. With
    `--no-loadscope-reorder` xdist hands the units out in this order, so the long ones
    start first instead of one worker ending alone on them (it ran the 4-minute replicas
    test last while the other worker idled; xdist's own reorder goes by test count)."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        units.setdefault(f"@{mark.args[0]}" if mark else item.nodeid, []).append(item)

    def unit_cost(key: str) -> float:
        return sum(map(cost, units[key])) + (START_S if key.startswith("@") else 0.0)

    items[:] = [i for key in sorted(units, key=lambda k: -unit_cost(k)) for i in units[key]]


def check(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stop a `--dist loadgroup` worker whose groups xdist did not take (it suffixes a grouped
    test's node id with `@group`; pytest-xdist 3.8 cannot on pytest 9.2, pytest-xdist#1386):
    each server would start on every worker, silently."""
    if not getattr(config.option, "loadgroup", False):
        return
    lost = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        raise pytest.UsageError(
            f"pytest-xdist did not group {lost[0]} and {len(lost) - 1} more tests "
            "(pytest 9.2 with pytest-xdist 3.8: pytest-dev/pytest-xdist#1386); use the locked "
            "versions (uv sync --locked) or run serially (-n 0)"
        )


# Test ports: below the kernel's ephemeral range (32768-60999 on Linux), where vLLM's own
# ports and every outgoing connection come from, so none of those can take a port a test
# picked before the test binds it; cut into one slice per parallel worker.
TEST_PORTS = (20000, 32767)


def port_slice(worker: str | None, count: int) -> str:
    """The MEDGEMMA_PORTS range of a worker (`gw0`, `gw1`, ... of `count`; None: a serial
    run, the whole range) as `LOW-HIGH` (pure)."""
    lo, hi = TEST_PORTS
    if not worker:
        return f"{lo}-{hi}"
    span = (hi - lo + 1) // max(count, 1)
    start = lo + int(worker.removeprefix("gw")) * span
    return f"{start}-{start + span - 1}"


def worker_core(worker: str | None, cores: list[int]) -> str | None:
    """The core a parallel worker's vLLM servers compute on (their VLLM_CPU_OMP_THREADS_BIND),
    one per worker in turn; None in a serial run (each server takes every core), pure.

    With two servers' OpenMP teams on the same two cores (the likely cost: each team's
    barriers wait for a thread the other has preempted), the fault and TP=2 modules took
    257 s and 213 s in a clean-clone run; with a core per worker, 121 s and 85 s (both on
    2026-12-07, `make test ARGS=--durations=0`). A config that names its own cores (TP=2,
    replicas) keeps them."""
    if not worker or not cores:
        return None
    return str(sorted(cores)[int(worker.removeprefix("gw")) % len(cores)])
