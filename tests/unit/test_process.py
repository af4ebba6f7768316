"""The one readiness poll (serve.process.wait_until_ready) against real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve.process import LaunchError, free_port, wait_until_ready


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
