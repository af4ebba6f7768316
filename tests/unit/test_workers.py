"""tests/workers.py: the tests that share a server (or a module's fixture) share a worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from tests import workers


@dataclass
class Item:
    """What workers reads of a pytest item: its fixtures and their scopes."""

    nodeid: str
    scopes: dict[str, str] = field(default_factory=dict)  # fixture name -> scope
    markers: list[pytest.MarkDecorator] = field(default_factory=list)

    @property
    def fixturenames(self) -> list[str]:
        return list(self.scopes)

    @property
    def _fixtureinfo(self) -> Any:
        defs = {name: [SimpleNamespace(scope=scope)] for name, scope in self.scopes.items()}
        return SimpleNamespace(name2fixturedefs=defs)

    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        self.markers.append(marker)

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return next((m.mark for m in self.markers if m.name == name), None)


def test_servers_and_per_module_fixtures_are_shared_the_rest_is_not() -> None:
    item = Item(
        "tests/e2e/test_x.py::test_a[1]",
        {"server": "session", "pacs": "session", "http": "module", "tmp_path": "function"},
    )
    assert workers.shared(item) == {"server", "tests/e2e/test_x.py"}  # type: ignore[arg-type]
    assert workers.shared(Item("tests/unit/test_y.py::t", {"pacs": "session"})) == set()  # type: ignore[arg-type]


def test_the_tests_that_take_both_cores_share_one_group_with_their_modules() -> None:
    tp2 = Item("tests/e2e/test_tp.py::t", markers=[pytest.mark.all_cores])
    ray = Item("tests/e2e/test_ray.py::t", {"cluster": "module"}, markers=[pytest.mark.all_cores])
    ray_other = Item("tests/e2e/test_ray.py::u", {"cluster": "module"})
    lone = Item("tests/e2e/test_z.py::t")
    sharing = [workers.shared(i) for i in (tp2, ray, ray_other, lone)]  # type: ignore[arg-type]
    assert sharing[0] == {"all_cores"}, sharing
    assert workers.groups(sharing) == ["all_cores", "all_cores", "all_cores", None]


def test_a_test_using_two_servers_joins_their_groups() -> None:
    sharing = [
        {"verify_server"},
        {"launcher_run"},
        {"tests/e2e/test_m.py"},
        set(),
        {"server", "tests/e2e/test_m.py"},
        {"launcher_run", "verify_server"},
        {"tests/unit/test_u.py"},
    ]
    assert workers.groups(sharing) == [
        "verify_server",  # verify_server and launcher_run joined: named after the first
        "verify_server",  # of them in grouping.SERVERS
        "server",  # test_m.py's module fixture and the server joined
        None,  # shares nothing: any worker
        "server",
        "verify_server",
        "tests/unit/test_u.py",
    ]


def test_mark_gives_each_sharing_test_its_group() -> None:
    items = [
        Item("tests/e2e/test_a.py::one", {"server": "session"}),
        Item("tests/unit/test_b.py::two"),
        Item("tests/e2e/test_c.py::three", {"server": "session", "verify_server": "session"}),
    ]
    workers.mark(items)  # type: ignore[arg-type]
    marks = [[m.mark.args for m in item.markers] for item in items]
    assert [m.mark.name for item in items for m in item.markers] == ["xdist_group"] * 2
    assert marks == [[("server",)], [], [("server",)]]


def test_a_worker_whose_groups_xdist_did_not_take_stops_with_one_line() -> None:
    grouped = Item("tests/e2e/test_a.py::one", {"server": "session"})
    workers.mark([grouped])  # type: ignore[list-item]
    get = {"xdist_group": grouped.markers[0].mark}.get
    item: Any = SimpleNamespace(nodeid=grouped.nodeid, get_closest_marker=get)
    loadgroup: Any = SimpleNamespace(option=SimpleNamespace(loadgroup=True))
    with pytest.raises(pytest.UsageError, match="did not group tests/e2e/test_a.py::one and 0"):
        workers.check(loadgroup, [item])
    item.nodeid += "@server"  # what xdist does to a grouped test's id
    workers.check(loadgroup, [item])
    item.nodeid = grouped.nodeid
    workers.check(SimpleNamespace(option=SimpleNamespace()), [item])  # type: ignore[arg-type]


@dataclass
class Marked:
    """An item with given marks, for longest_first."""

    nodeid: str
    marks: dict[str, pytest.Mark] = field(default_factory=dict)

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return self.marks.get(name)


def test_the_costliest_work_unit_is_handed_out_first_and_groups_stay_whole() -> None:
    group = pytest.mark.xdist_group
    items = [
        Marked("tests/unit/test_u.py::a"),
        Marked("tests/e2e/test_s.py::one", {"xdist_group": group("server").mark}),
        Marked("tests/e2e/test_t.py::tp2", {"slow": pytest.mark.slow.mark}),
        Marked("tests/e2e/test_s.py::two", {"xdist_group": group("server").mark}),
        Marked("tests/e2e/test_r.py::fleet", {"slow": pytest.mark.slow(seconds=220).mark}),
        Marked("tests/e2e/test_e.py::no_server"),
    ]
    workers.longest_first(items)  # type: ignore[arg-type]
    # fleet 220 s > server's two tests + its start 46 s > tp2 30 s > an e2e 3 s > a unit 0.1 s
    assert [i.nodeid.split("::")[1] for i in items] == [
        "fleet",
        "one",
        "two",  # the group whole, in its order (its last user stays last)
        "tp2",
        "no_server",
        "a",
    ]


def test_each_parallel_worker_gets_its_own_core_in_turn() -> None:
    assert workers.worker_core(None, [0, 1]) is None  # serially every server takes every core
    assert [workers.worker_core(f"gw{k}", [1, 0]) for k in range(3)] == ["0", "1", "0"]
    assert workers.worker_core("gw1", [4, 6]) == "6"
    assert workers.worker_core("gw0", []) is None
