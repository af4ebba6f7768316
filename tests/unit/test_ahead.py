"""tests/ahead.py: servers started in the background, taken by their fixtures. The starts
here are stand-ins (lists and ExitStack callbacks): what is tested is the hand-over."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from serve.process import LaunchError
from tests.ahead import Ahead, Start, bring_up


def recording(log: list[str], name: str, fail: bool = False) -> Start:
    def start(stack: ExitStack) -> str:
        log.append(f"start {name}")
        stack.callback(log.append, f"stop {name}")
        if fail:
            raise LaunchError(f"{name}: the server exited with status 1")
        return f"live {name}"

    return start


def planned(log: list[str], fail: str = "", alive: int = 3) -> Ahead:
    ahead = Ahead(alive=alive)
    for name in ("a", "b", "c"):

        def plan(_factory: pytest.TempPathFactory, n: str = name) -> Start:
            return recording(log, n, fail == n)

        ahead.plan(name, plan)
    return ahead


@pytest.fixture()
def factory(tmp_path_factory: pytest.TempPathFactory) -> pytest.TempPathFactory:
    return tmp_path_factory


def test_only_the_used_planned_servers_start_in_order_and_stop_with_their_fixture(
    factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    log: list[str] = []
    ahead = planned(log)
    ahead.begin_planned(["c", "x", "a"], factory)  # x has no plan; b no user
    with ExitStack() as fixture_stack:
        got = ahead.take("c", fixture_stack)
        assert got is not None and got.value == "live c" and got.ready >= got.began
        assert ahead.take("b", fixture_stack) is None  # never planned to start: start your own
        assert ahead.take("c", fixture_stack) is None  # taken once
        assert "stop c" not in log
    assert "stop c" in log  # the fixture's stack stopped it
    ahead.pending["a"].result()  # (close() would cancel it if it had not begun)
    ahead.close()  # a, started but never taken, is stopped at the end
    assert sorted(log) == ["start a", "start c", "stop a", "stop c"]
    assert log[0] == "start c" and log[-1] == "stop a"  # in the order asked


def test_a_failed_start_fails_the_fixture_that_takes_it_with_the_servers_words(
    factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    log: list[str] = []
    ahead = planned(log, fail="a")
    monkeypatch.setattr("tests.ahead.AHEAD", ahead)
    ahead.begin_planned(["a"], factory)
    with ExitStack() as stack, pytest.raises(pytest.fail.Exception) as failed:
        bring_up(stack, "a", "the session's vLLM server", recording(log, "again"))
    assert str(failed.value) == (
        "the session's vLLM server did not start: a: the server exited with status 1"
    )
    assert log == ["start a", "stop a"]  # what it started was stopped
    ahead.close()


def test_without_a_start_ahead_the_fixture_starts_its_own(
    factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")  # under xdist nothing starts ahead
    log: list[str] = []
    ahead = planned(log)
    ahead.begin_planned(["a", "b"], factory)
    assert ahead.pending == {} and log == []
    ahead.close()


def test_bring_up_takes_the_one_started_ahead(
    factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    log: list[str] = []
    ahead = planned(log)
    monkeypatch.setattr("tests.ahead.AHEAD", ahead)
    ahead.begin_planned(["b"], factory)
    with ExitStack() as stack:
        assert bring_up(stack, "b", "b", recording(log, "own")) == "live b"
        assert bring_up(stack, "a", "a", recording(log, "own")) == "live own"
    assert log == ["start b", "start own", "stop own", "stop b"]
    ahead.close()


def test_no_more_than_alive_started_ahead_run_at_once(
    factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    log: list[str] = []
    ahead = planned(log, alive=1)
    ahead.begin_planned(["a", "b"], factory)
    with ExitStack() as first:
        assert ahead.take("a", first) is not None
        assert log == ["start a"]  # b waits for a's slot
    with ExitStack() as second:
        got = ahead.take("b", second)
        assert got is not None and got.value == "live b"
    assert log == ["start a", "stop a", "start b", "stop b"]
    ahead.close()
