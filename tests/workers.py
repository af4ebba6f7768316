"""Which tests share a worker when the suite runs in parallel (pytest-xdist).

`make test` runs `pytest -n 2 --dist loadgroup`: xdist gives each worker whole groups (the
tests with the same `xdist_group` mark, in the collection's order, which is
tests/grouping.py's) and the other tests one at a time. `mark` puts the tests that share an
expensive fixture in one group: a session server (grouping.SERVERS) or a fixture built once
per module or class (the module's tests), joined: a test that uses two of them merges their
groups into one. So each server starts on one worker only, and that worker runs all of its
users in grouping's order, destructive ones last: the server's last user in the collection
is the last one that worker runs of them, and `SESSION.after_test` stops the server after
it, as in a serial run. What is cheap stays per worker: Orthanc (`pacs`, about 3 s) and the
stand-in model (built once, under a lock).
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from tests.grouping import SERVERS

PER_MODULE = ("module", "class")  # fixture scopes whose value the module's tests share


def shared(item: pytest.Item) -> set[str]:
    """The expensive fixtures `item` shares with other tests: server fixture names, and its
    module's node id if it uses a fixture built once per module or class."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs if info is not None else {}
    keys: set[str] = set()
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
