"""End-to-end fixtures: real servers, each handed to tests as a `LiveServer`.

`server`: ONE vLLM OpenAI server for the session (configs/deployments/cpu-tiny.yaml) serving
the tiny MedGemma-architecture stand-in from its local folder, with an API key enforced
and, beside it, a keys file of a few services (`service_keys`, one rate-limited, one
revoked) with its audit trail; its log goes to logs/. For quick iteration,
MEDGEMMA_TEST_SERVER_URL (root URL, e.g. http://127.0.0.1:8100) and MEDGEMMA_TEST_API_KEY
make it a server you started yourself with the same config.

`verify_server`: cpu-verify.yaml's server (the `verify` stand-in and its LoRA adapter).

`launcher`: ONE `python -m serve` for the TLS, monitoring, log and supervision tests, the way
an operator runs it: HTTPS from a self-signed certificate made here, `--monitor` (its own
Prometheus), a restart policy, a bounded queue and an API key. The tests that overload,
restart or stop it are marked `destructive` and run after the others; a test that finds it
stopped (the SIGTERM drain test stopped it) gets a fresh one, so any test also runs alone.

Each stops after the last test that needs it (tests/grouping.py). In a serial run the three
start ahead, in the background, while the tests before their groups run (tests/ahead.py);
else each starts when a test first asks for it. A start-up failure fails the test with the
server's last log lines.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from serve.config.deployment import load_config
from serve.monitor.prometheus import storage_dir
from serve.process import free_port
from serve.standin import tiny_model
from tests.ahead import AHEAD, Start, bring_up
from tests.certs import self_signed_cert
from tests.conftest import CONFIGS, LOG_DIR
from tests.e2e.launcher import API_KEY, LiveServer, launched, serving, wait_until
from tests.grouping import SESSION

LAUNCHER = (  # restart once if the server dies; at most 16 queued; a 60 s drain on SIGTERM
    "restart.enabled=true",
    "restart.max_restarts=1",
    "restart.backoff_s=1",
    "drain_timeout_s=60",
    "max_num_queued_reqs=16",
)


def verify_start(factory: pytest.TempPathFactory) -> Start:
    """How to start cpu-verify.yaml's server (`verify_server`)."""

    def start(stack: ExitStack) -> LiveServer:
        cfg = load_config(CONFIGS / "cpu-verify.yaml", {"port": free_port()})
        environ = {**os.environ, cfg.api_key_env: API_KEY}
        log_path = LOG_DIR / f"pytest-verify-{cfg.port}.log"
        return stack.enter_context(serving(cfg, log_path, environ))

    return start


@pytest.fixture(scope="session")
def verify_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The vLLM server of cpu-verify.yaml (the decisive `verify` stand-in plus its LoRA
    adapter `verify-lora`, runtime loading on) on a free port, with an API key: shared by
    the verify and the LoRA tests."""
    with ExitStack() as stack:
        SESSION.stop_after_last_user("verify_server", stack)
        yield bring_up(stack, "verify_server", "the verify server", verify_start(tmp_path_factory))


@dataclass(frozen=True)
class ServiceKeys:
    """The session server's keys file: each service's key, and its audit trail."""

    path: Path
    keys: dict[str, str]
    audit: Path


# name -> requests per minute (None: unlimited); `to-revoke` is revoked by a test, `revoked`
# before the server starts.
SERVICES = {"ris": None, "reports": None, "limited": 2, "to-revoke": None, "revoked": None}


@functools.cache
def session_keys(folder: Path) -> ServiceKeys:
    """A keys file with SERVICES in `folder`, made once with serve.auth.keys (`python -m
    serve keys` writes the same way)."""
    from serve.auth.keys import KeysTable, add_service, new_key, revoke_service, write_keys_file

    folder.mkdir(parents=True, exist_ok=True)
    table, keys = KeysTable(), {}
    for name, rpm in SERVICES.items():
        keys[name] = new_key()
        table = add_service(table, name, keys[name], "2026-12-07T00:00:00Z", rpm)
    table = revoke_service(table, "revoked", "2026-12-07T00:00:01Z")
    write_keys_file(folder / "keys.json", table)
    return ServiceKeys(folder / "keys.json", keys, folder / "audit.jsonl")


def keys_folder(factory: pytest.TempPathFactory) -> Path:
    return factory.getbasetemp() / "service-keys"


@pytest.fixture(scope="session")
def service_keys(tmp_path_factory: pytest.TempPathFactory) -> ServiceKeys:
    """The session's `server`'s keys file (SERVICES) and its audit trail."""
    if os.environ.get("MEDGEMMA_TEST_SERVER_URL"):
        pytest.skip("a server started elsewhere has no keys file of this session")
    return session_keys(keys_folder(tmp_path_factory))


def server_start(factory: pytest.TempPathFactory) -> Start:
    """How to start the session's `server`: cpu-tiny.yaml, the API key beside the service
    keys of `service_keys`."""
    keys = session_keys(keys_folder(factory))

    def start(stack: ExitStack) -> LiveServer:
        auth = {"keys_file": str(keys.path), "audit": {"path": str(keys.audit)}}
        model = str(tiny_model.ensure("tiny", 0))
        cfg = load_config(
            CONFIGS / "cpu-tiny.yaml", {"model": model, "port": free_port(), "auth": auth}
        )
        log_path = LOG_DIR / f"pytest-server-{cfg.port}.log"
        environ = {**os.environ, cfg.api_key_env: API_KEY}
        return stack.enter_context(serving(cfg, log_path, environ))

    return start


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The session's vLLM OpenAI server (or the one MEDGEMMA_TEST_SERVER_URL names)."""
    if external := os.environ.get("MEDGEMMA_TEST_SERVER_URL"):
        key = os.environ.get("MEDGEMMA_TEST_API_KEY", API_KEY)
        model = load_config(CONFIGS / "cpu-tiny.yaml").model_name
        yield LiveServer(external.rstrip("/"), key, model)
        return
    with ExitStack() as stack:
        SESSION.stop_after_last_user("server", stack)
        yield bring_up(stack, "server", "the session's vLLM server", server_start(tmp_path_factory))


def launcher_start(factory: pytest.TempPathFactory) -> Start:
    """How to start the session's launcher (see the module's docstring), in a fresh folder;
    its Prometheus' folder goes when it stops."""

    def start(stack: ExitStack) -> LiveServer:
        work = factory.mktemp("launcher")
        tls = self_signed_cert(work / "tls")
        args: tuple[str, ...] = ()
        if shutil.which("prometheus"):  # else test_monitoring skips
            monitor_port = free_port()
            stack.callback(shutil.rmtree, storage_dir(monitor_port), ignore_errors=True)
            args = ("--monitor", "--monitor-port", str(monitor_port))
        return stack.enter_context(launched(work, *LAUNCHER, tls=tls, args=args))

    return start


@pytest.fixture(scope="session")
def launcher_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], LiveServer]]:
    """A function that returns the session's launcher, starting it on first use and again
    whenever a test has stopped it; every one started is gone after the last test that
    uses it."""
    with ExitStack() as stack:
        SESSION.stop_after_last_user("launcher_run", stack)
        current: list[LiveServer] = []

        def running() -> LiveServer:
            last = current[-1] if current else None
            if last is not None and last.running():  # wait out a restart in progress
                wait_until(
                    lambda: last.healthy() or not last.running(),
                    600,
                    lambda: f"the launcher did not come back:\n{last.text()[-3000:]}",
                )
            if last is not None and last.running():
                return last
            start = launcher_start(tmp_path_factory)
            current.append(bring_up(stack, "launcher_run", "the launcher", start))
            return current[-1]

        yield running


AHEAD.plan("verify_server", verify_start)
if not os.environ.get("MEDGEMMA_TEST_SERVER_URL"):
    AHEAD.plan("server", server_start)
AHEAD.plan("launcher_run", launcher_start)


@pytest.fixture()
def launcher(launcher_run: Callable[[], LiveServer]) -> LiveServer:
    """`python -m serve` over HTTPS with `--monitor`, restarting the server once if it
    dies, at most 16 requests queued (more get 503) and a 60 s drain on SIGTERM; running
    when the test starts."""
    return launcher_run()
