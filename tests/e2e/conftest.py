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

Each starts when a test first asks for it and stops after the last test that needs it
(tests/grouping.py); a start-up failure fails the test with the server's last log lines.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from serve.config.deployment import load_config
from serve.monitor.prometheus import storage_dir
from serve.process import LaunchError, free_port
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


def start(stack: ExitStack, what: str, server: AbstractContextManager[LiveServer]) -> LiveServer:
    """Enter a server's context on `stack`; a start-up failure fails the test, without a
    traceback, with the server's own words."""
    try:
        return stack.enter_context(server)
    except LaunchError as exc:
        pytest.fail(f"{what} did not start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def verify_server() -> Iterator[LiveServer]:
    """The vLLM server of cpu-verify.yaml (the decisive `verify` stand-in plus its LoRA
    adapter `verify-lora`, runtime loading on) on a free port, with an API key: shared by
    the verify and the LoRA tests."""
    cfg = load_config(CONFIGS / "cpu-verify.yaml", {"port": free_port()})
    environ = {**os.environ, cfg.api_key_env: API_KEY}
    with ExitStack() as stack:
        SESSION.stop_after_last_user("verify_server", stack)
        t0 = time.perf_counter()
        live = start(
            stack,
            "the verify server",
            serving(cfg, LOG_DIR / f"pytest-verify-{cfg.port}.log", environ),
        )
        print(f"\nverify server ready in {time.perf_counter() - t0:.1f} s at {live.base_url}")
        yield live


@dataclass(frozen=True)
class ServiceKeys:
    """The session server's keys file: each service's key, and its audit trail."""

    path: Path
    keys: dict[str, str]
    audit: Path


# name -> requests per minute (None: unlimited); `to-revoke` is revoked by a test, `revoked`
# before the server starts.
SERVICES = {"ris": None, "reports": None, "limited": 2, "to-revoke": None, "revoked": None}


@pytest.fixture(scope="session")
def service_keys(tmp_path_factory: pytest.TempPathFactory) -> ServiceKeys:
    """A keys file with SERVICES, made with serve.auth.keys (`python -m serve keys` writes
    the same way), for the session's `server`."""
    if os.environ.get("MEDGEMMA_TEST_SERVER_URL"):
        pytest.skip("a server started elsewhere has no keys file of this session")
    from serve.auth.keys import KeysTable, add_service, new_key, revoke_service, write_keys_file

    folder = tmp_path_factory.mktemp("keys")
    table, keys = KeysTable(), {}
    for name, rpm in SERVICES.items():
        keys[name] = new_key()
        table = add_service(table, name, keys[name], "2026-12-07T00:00:00Z", rpm)
    table = revoke_service(table, "revoked", "2026-12-07T00:00:01Z")
    write_keys_file(folder / "keys.json", table)
    return ServiceKeys(folder / "keys.json", keys, folder / "audit.jsonl")


@pytest.fixture(scope="session")
def server(tiny_model_dir: Path, request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """The session's vLLM OpenAI server (or the one MEDGEMMA_TEST_SERVER_URL names): the
    API key beside the service keys of `service_keys`."""
    cfg = load_config(
        CONFIGS / "cpu-tiny.yaml", {"model": str(tiny_model_dir), "port": free_port()}
    )
    if external := os.environ.get("MEDGEMMA_TEST_SERVER_URL"):
        key = os.environ.get("MEDGEMMA_TEST_API_KEY", API_KEY)
        yield LiveServer(external.rstrip("/"), key, cfg.model_name)
        return
    keys: ServiceKeys = request.getfixturevalue("service_keys")
    auth = {"keys_file": str(keys.path), "audit": {"path": str(keys.audit)}}
    cfg = load_config(
        CONFIGS / "cpu-tiny.yaml", {"model": str(tiny_model_dir), "port": cfg.port, "auth": auth}
    )
    log_path = LOG_DIR / f"pytest-server-{cfg.port}.log"
    environ = {**os.environ, cfg.api_key_env: API_KEY}
    with ExitStack() as stack:
        SESSION.stop_after_last_user("server", stack)
        t0 = time.perf_counter()
        live = start(stack, "the session's vLLM server", serving(cfg, log_path, environ))
        print(f"\nvLLM server ready in {time.perf_counter() - t0:.1f} s at {live.base_url}")
        yield live


@pytest.fixture(scope="session")
def launcher_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], LiveServer]]:
    """A function that returns the session's launcher (see the module's docstring),
    starting it on first use and again whenever a test has stopped it; every one started,
    and its Prometheus' folder, is gone after the last test that uses it."""
    with ExitStack() as stack:
        SESSION.stop_after_last_user("launcher_run", stack)
        current: list[LiveServer] = []

        def running() -> LiveServer:
            run = current[-1] if current else None
            if run is not None and run.running():  # wait out a restart in progress
                wait_until(
                    lambda: run.healthy() or not run.running(),
                    600,
                    lambda: f"the launcher did not come back:\n{run.text()[-3000:]}",
                )
            if run is None or not run.running():
                work = tmp_path_factory.mktemp("launcher")
                tls = self_signed_cert(work / "tls")
                args: tuple[str, ...] = ()
                if shutil.which("prometheus"):  # else test_monitoring skips
                    monitor_port = free_port()
                    stack.callback(shutil.rmtree, storage_dir(monitor_port), ignore_errors=True)
                    args = ("--monitor", "--monitor-port", str(monitor_port))
                run = start(stack, "the launcher", launched(work, *LAUNCHER, tls=tls, args=args))
                current.append(run)
            return run

        yield running


@pytest.fixture()
def launcher(launcher_run: Callable[[], LiveServer]) -> LiveServer:
    """`python -m serve` over HTTPS with `--monitor`, restarting the server once if it
    dies, at most 16 requests queued (more get 503) and a 60 s drain on SIGTERM; running
    when the test starts."""
    return launcher_run()
