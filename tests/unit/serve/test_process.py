"""The managed-process life cycle (serve.process: ManagedProcess and its readiness poll,
wait_until_ready) against real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve.process import (
    EPHEMERAL,
    PORTS_ENV,
    LaunchError,
    Listen,
    ManagedProcess,
    below_ephemeral,
    free_port,
    port_in_use,
    port_range,
    wait_until_ready,
)
from tests.workers import TEST_PORTS, port_slice


def start(code: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)


def test_ready_once_every_url_answers_200(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    (tmp_path / "health").write_text("ok")
    try:
        t0 = time.monotonic()
        root = f"http://127.0.0.1:{port}"
        wait_until_ready(
            proc, [f"{root}/health", f"{root}/"], timeout_s=30, log_path=log, interval_s=0.1
        )
        assert time.monotonic() - t0 < 30
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_child_that_dies_fails_fast_with_its_cause(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc = start("import sys; print('ValueError: no such model', flush=True); sys.exit(3)", log)
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as err:
        wait_until_ready(
            proc, [f"http://127.0.0.1:{free_port()}/health"], timeout_s=60, log_path=log
        )
    msg = str(err.value)
    assert time.monotonic() - t0 < 30, "did not fail fast"
    assert msg.startswith(
        "the vLLM server exited with status 3 during start-up: ValueError: no such model"
    ), msg
    assert f"last lines of {log}" in msg, msg


def test_a_child_that_never_answers_times_out(tmp_path: Path) -> None:
    log = tmp_path / "fake.log"
    proc = start("import time; time.sleep(60)", log)
    try:
        with pytest.raises(LaunchError, match="the fake endpoint was not ready after 1 s"):
            wait_until_ready(
                proc,
                [f"http://127.0.0.1:{free_port()}/v1/models"],
                timeout_s=1,
                log_path=log,
                name="the fake endpoint",
                interval_s=0.1,
            )
        assert proc.poll() is None, "the caller, not the poll, stops the process"
    finally:
        proc.kill()
        proc.wait(timeout=10)


# --- ManagedProcess: the one life cycle ------------------------------------------------


class Error(RuntimeError):
    """A subclass's own error type (as MonitorError, PacsError)."""


class FileServer(ManagedProcess):
    """http.server over `root` on `port`: ready once /health answers; `code` replaces it."""

    name = "the file server"
    failure = Error
    poll_interval_s = 0.1
    startup_timeout_s: float = 30.0

    def __init__(self, root: Path, port: int, code: str | None = None, probe_ok: bool = True):
        self.root, self.port, self.code, self.probe_ok = root, port, code, probe_ok
        self.log_path, self.cwd = root / "logs" / "server.log", root
        self.probed = False

    def command_and_env(self) -> tuple[list[str], None]:
        if self.code is not None:
            return [sys.executable, "-c", self.code], None
        return [sys.executable, "-m", "http.server", str(self.port), "-b", "127.0.0.1"], None

    def listens(self) -> list[Listen]:
        return [Listen("127.0.0.1", self.port, "file port", "(--file-port N)")]

    def ready_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}/health"]

    def after_ready(self, deadline: float) -> None:
        self.probed = True
        if not self.probe_ok:
            raise LaunchError("the file server answers /health but its probe failed")


def test_managed_process_starts_logs_and_stops_its_group(tmp_path: Path) -> None:
    (tmp_path / "health").write_text("ok")
    port = free_port()
    with FileServer(tmp_path, port) as server:
        assert server.alive() and server.probed
        assert server.health_s is not None and server.started_s is not None
        assert server.started_s >= server.health_s
        assert port_in_use("127.0.0.1", port)
        proc = server.proc
        assert proc is not None and os.getpgid(proc.pid) == proc.pid, "not its own group"
    assert proc.poll() is not None and not server.alive()
    assert '"GET /health HTTP/1.1" 200' in server.log_path.read_text()  # stderr in the log


def test_a_busy_port_is_refused_up_front_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = FileServer(tmp_path, port)
        with pytest.raises(Error) as err:
            server.start()
    assert str(err.value) == (
        f"file port {port} on 127.0.0.1 is already in use: stop what listens there or "
        "choose another (--file-port N)"
    )
    assert server.proc is None and not server.log_path.exists(), "started anyway"


def test_a_child_that_dies_fails_fast_in_the_subclass_error(tmp_path: Path) -> None:
    server = FileServer(tmp_path, free_port(), "import sys; sys.exit('OSError: no disk')")
    t0 = time.monotonic()
    with pytest.raises(Error) as err:
        server.start()
    assert time.monotonic() - t0 < 20, "did not fail fast"
    first = str(err.value).splitlines()[0]
    assert first == "the file server exited with status 1 during start-up: OSError: no disk"
    assert f"last lines of {server.log_path}" in str(err.value)


def test_a_failed_readiness_step_stops_the_child(tmp_path: Path) -> None:
    (tmp_path / "health").write_text("ok")
    server = FileServer(tmp_path, free_port(), probe_ok=False)
    with pytest.raises(Error, match="probe failed"):
        server.start()
    assert server.probed and server.proc is not None and server.proc.poll() is not None


class Banner(ManagedProcess):
    """A child that prints a line on stdout and an error on stderr, then sleeps."""

    name = "the banner"

    def __init__(self, tmp_path: Path) -> None:
        self.log_path, self.out_path = tmp_path / "err.log", tmp_path / "out.log"

    def command_and_env(self) -> tuple[list[str], dict[str, str]]:
        code = "import sys, time; print('ready'); print('warn', file=sys.stderr); time.sleep(60)"
        return [sys.executable, "-u", "-c", code], {"PATH": os.environ.get("PATH", "")}

    def after_ready(self, deadline: float) -> None:
        while "ready" not in (self.out_path.read_text() if self.out_path else ""):
            time.sleep(0.05)


def test_stdout_may_have_a_file_of_its_own(tmp_path: Path) -> None:
    with Banner(tmp_path) as banner:
        assert banner.out_path is not None and banner.out_path.read_text() == "ready\n"
    assert "warn" in banner.log_path.read_text() and "ready" not in banner.log_path.read_text()
    assert banner.proc is not None and banner.proc.returncode == -signal.SIGTERM


def test_free_port_draws_from_medgemma_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PORTS_ENV, "21000-21009")
    picked = {free_port() for _ in range(40)}
    assert picked <= set(range(21000, 21010)), picked
    with socket.socket() as busy:  # a listener: never picked
        busy.bind(("127.0.0.1", 21000))
        busy.listen()
        assert 21000 not in {free_port() for _ in range(40)}


def test_without_medgemma_ports_a_port_below_the_kernels_ephemeral_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert below_ephemeral("32768\t60999") == (20000, 32767)
    assert below_ephemeral("10000 60999") == (1024, 9999)
    assert below_ephemeral("1500 60999") is None  # too few below: the kernel picks
    assert below_ephemeral("") is None and below_ephemeral("x") is None
    monkeypatch.delenv(PORTS_ENV, raising=False)
    span = below_ephemeral(EPHEMERAL.read_text()) if EPHEMERAL.exists() else None
    picked = {free_port() for _ in range(20)}
    if span is not None:
        assert all(span[0] <= p <= span[1] for p in picked), (span, picked)


@pytest.mark.parametrize(
    ("text", "says"),
    [("20000", "expected LOW-HIGH"), ("x-y", "expected LOW-HIGH"), ("30000-20000", "LOW <= HIGH")],
)
def test_a_bad_medgemma_ports_is_named(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as err:
        port_range(text)
    assert PORTS_ENV in str(err.value)


def test_free_port_names_a_bad_medgemma_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PORTS_ENV, "20000")
    with pytest.raises(LaunchError, match="MEDGEMMA_PORTS='20000': expected LOW-HIGH"):
        free_port()


def test_each_worker_has_its_own_ports_below_the_kernels() -> None:
    slices = [port_range(port_slice(f"gw{k}", 2)) for k in range(2)]
    assert slices[0] is not None and slices[1] is not None
    assert slices[0][1] < slices[1][0] and slices[1][1] < 32768, slices
    assert port_range(port_slice(None, 1)) == TEST_PORTS


SHM_CHILD = """
import http.server, os, sys
from multiprocessing import shared_memory
segment = shared_memory.SharedMemory(create=True, size=1 << 20)  # as vLLM's message queue
open("segment", "w").write(segment.name)
handler = http.server.SimpleHTTPRequestHandler
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


class SegmentServer(FileServer):
    """A file server that maps a POSIX shared memory segment, as vLLM's engine does."""

    def command_and_env(self) -> tuple[list[str], None]:
        return [sys.executable, "-c", SHM_CHILD, str(self.port)], None


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_shared_memory_a_killed_group_left_behind_is_removed_when_it_is_stopped(
    tmp_path: Path,
) -> None:
    (tmp_path / "health").write_text("ok")
    with SegmentServer(tmp_path, free_port()) as server:
        segment = Path("/dev/shm") / (tmp_path / "segment").read_text()
        assert server.shared_memory == {segment}, server.shared_memory
        server.signal(signal.SIGKILL)  # its resource tracker too: nothing unlinks it
        assert server.proc is not None and server.proc.wait(timeout=30) == -signal.SIGKILL
        assert segment.exists()
    assert not segment.exists() and server.shared_memory == set()
