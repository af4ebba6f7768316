"""Where the tests find the repository, and the stand-in model every kind of test uses.

The real vLLM servers and the fixtures that start them are end-to-end only:
tests/e2e/conftest.py and tests/e2e/launcher.py. The `pacs` fixture (a real Orthanc with
sample studies, quick to start) is for every kind of test: tests/pacs_fixture.py.
The order the tests run in, and when each server stops: tests/grouping.py; which servers
start ahead, in the background: tests/ahead.py; which tests share a worker when they run
in parallel (`make test`, on 2 xdist workers): tests/workers.py.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from serve.process import PORTS_ENV
from tests import workers
from tests.ahead import AHEAD
from tests.grouping import SESSION
from tests.pacs_fixture import pacs  # noqa: F401  (the fixture, for every test)

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs" / "deployments"
LOG_DIR = REPO / "logs"
CORES_ENV = "VLLM_CPU_OMP_THREADS_BIND"  # vLLM's: the cores a CPU server's model runs on


def pytest_configure(config: pytest.Config) -> None:
    """The ports this process and its children pick (serve.process.free_port): this
    worker's slice (tests/workers.py), set in every worker, as xdist's workers inherit the
    controller's environment. In parallel, also the core this worker's servers compute on
    (`workers.worker_core`), unless the caller chose cores itself."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ[PORTS_ENV] = workers.port_slice(worker, count)
    core = workers.worker_core(worker, list(os.sched_getaffinity(0)))
    if core is not None:
        os.environ.setdefault(CORES_ENV, core)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny stand-in model, built into .cache/ on first use (never downloaded)."""
    from serve.standin import tiny_model

    return tiny_model.ensure("tiny", 0)


@pytest.fixture(scope="session", autouse=True)
def servers_ahead(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the first test, start the session servers the run will use in the background
    (tests/ahead.py); at the end, stop any never taken."""
    AHEAD.begin_planned(SESSION.used(), tmp_path_factory)
    yield
    AHEAD.close()


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Generator[None, None, None]:
    if config.pluginmanager.hasplugin("xdist"):  # before xdist reads the groups (make test)
        workers.mark(items)
    yield
    workers.check(config, items)
    SESSION.order(items)  # after pytest-randomly's shuffle and -k/-m deselection
    if getattr(config.option, "loadgroup", False):
        workers.longest_first(items)  # keeps each group's order, so its last user too


def pytest_sessionfinish(session: pytest.Session) -> None:
    SESSION.join()  # the servers stopped in the background are gone


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        SESSION.after_test(item)
