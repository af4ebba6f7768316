"""tests/grouping.py: the order the tests run in, and each server stopped after its last user."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests import grouping


@dataclass
class Item:
    """What grouping reads of a pytest item."""

    nodeid: str
    fixturenames: tuple[str, ...] = ()
    marks: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return getattr(pytest.mark, name)(*self.marks[name]).mark if name in self.marks else None


def ids(items: list[Any]) -> list[str]:
    return [i.nodeid for i in items]


def test_unit_tests_first_then_each_servers_group_then_own_servers() -> None:
    items: list[Any] = [
        Item("tests/e2e/test_tls.py::a", ("launcher_run",)),
        Item("tests/e2e/test_tp.py::tp", ("tiny_model_dir",), {"slow": ()}),
        Item("tests/e2e/test_serving.py::a", ("server", "tiny_model_dir")),
        Item("tests/e2e/test_cli.py::dry_run"),
        Item("tests/e2e/test_verify.py::a", ("verify_server",), {"slow": ()}),
        Item("tests/unit/test_x.py::b"),
        Item("tests/e2e/test_serving.py::b", ("server",)),
        Item("tests/unit/test_x.py::a"),
    ]
    grouping.Lifetimes().order(items)
    assert ids(items) == [
        "tests/unit/test_x.py::b",  # the shuffled order stays inside a group
        "tests/unit/test_x.py::a",
        "tests/e2e/test_cli.py::dry_run",
        "tests/e2e/test_serving.py::a",
        "tests/e2e/test_serving.py::b",
        "tests/e2e/test_verify.py::a",
        "tests/e2e/test_tls.py::a",
        "tests/e2e/test_tp.py::tp",
    ]


def test_destructive_tests_run_last_in_their_group_stops_after_restarts() -> None:
    launcher = ("launcher_run",)
    items: list[Any] = [
        Item("drain", launcher, {"destructive": ("stops",)}),
        Item("kill", launcher, {"destructive": ("restarts",)}),
        Item("tls", launcher),
        Item("overload", launcher, {"destructive": ("overloads",)}),
        Item("sighup", launcher),
    ]
    grouping.Lifetimes().order(items)
    assert ids(items) == ["tls", "sighup", "overload", "kill", "drain"]


def test_the_test_that_fills_the_image_cache_runs_after_the_others_that_share_it() -> None:
    cache = ("image_cache_server", "tiny_model_dir")
    items: list[Any] = [
        Item("tests/e2e/test_image_cache.py::full", cache, {"slow": (), "destructive": ("fills",)}),
        Item("tests/e2e/test_tp.py::tp", ("tiny_model_dir",), {"slow": ()}),
        Item("tests/e2e/test_image_cache.py::hit", cache, {"slow": ()}),
    ]
    grouping.Lifetimes().order(items)
    assert ids(items) == [
        "tests/e2e/test_image_cache.py::hit",
        "tests/e2e/test_image_cache.py::full",
        "tests/e2e/test_tp.py::tp",
    ]


def test_a_server_stops_after_its_last_user_and_not_before() -> None:
    items: list[Any] = [Item("e2e/a", ("server",)), Item("e2e/b", ("server",)), Item("e2e/c")]
    lifetimes = grouping.Lifetimes()
    lifetimes.order(items)
    assert ids(items) == ["e2e/c", "e2e/a", "e2e/b"]
    stopped: list[str] = []
    stack = ExitStack()
    stack.callback(stopped.append, "server")
    lifetimes.stop_after_last_user("server", stack)
    lifetimes.after_test(items[0])
    lifetimes.after_test(items[1])
    assert stopped == []
    lifetimes.after_test(items[2])
    lifetimes.join()  # stopped in the background
    assert stopped == ["server"]
    stack.close()  # the fixture's own end of session: nothing left to stop
    assert stopped == ["server"]
