"""Supervision: keep a started vLLM server up, restarting it as the config's `restart` says.

vLLM's API server exits when its engine process dies (a crash, an OOM kill); with
`restart.enabled` the launcher then reaps what is left of the server's process group,
waits `restart.backoff_s` and starts it again on the same port, at most
`restart.max_restarts` times. Each restart is reported with the time from the death
being noticed to the server answering /health and /v1/models again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from serve.launch.process import LaunchError, ServerProcess


@dataclass(frozen=True)
class RestartRecord:
    """One restart: which, the exit status that caused it, and how long the server was down."""

    number: int
    exit_code: int | None
    down_s: float
    ok: bool


def wait_for_exit(server: ServerProcess, stopping: Callable[[], bool], poll_s: float) -> int | None:
    """Block until the server process exits (its status) or `stopping()` turns true (None)."""
    while not stopping():
        if server.proc is None:
            return None
        code = server.proc.poll()
        if code is not None:
            return code
        time.sleep(poll_s)
    return None


def sleep_unless(stopping: Callable[[], bool], seconds: float, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stopping():
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def supervise(
    server: ServerProcess,
    stopping: Callable[[], bool],
    report: Callable[[str], None],
    poll_s: float = 0.5,
) -> tuple[int, list[RestartRecord]]:
    """Watch a started server until `stopping()`; restart it on exit per `cfg.restart`.

    Returns (exit status for the launcher, the restarts made): 0 when stopped on request,
    else the status of the server's last exit."""
    policy = server.cfg.restart
    records: list[RestartRecord] = []
    while True:
        code = wait_for_exit(server, stopping, poll_s)
        if stopping():
            return 0, records
        if not policy.enabled:
            report(f"error: the vLLM server exited with status {code}; see {server.log_path}")
            return code or 1, records
        if len(records) >= policy.max_restarts:
            report(
                f"error: the vLLM server exited with status {code}; giving up after "
                f"{len(records)} restart(s) (restart.max_restarts); see {server.log_path}"
            )
            return code or 1, records
        number = len(records) + 1
        t0 = time.perf_counter()
        report(
            f"the vLLM server exited with status {code}; restart {number}/"
            f"{policy.max_restarts} in {policy.backoff_s:g} s"
        )
        server.stop(timeout_s=10)  # reap engine processes left in its group
        sleep_unless(stopping, policy.backoff_s)
        if stopping():
            return 0, records
        try:
            server.start()
        except LaunchError as exc:
            if stopping():
                return 0, records
            records.append(RestartRecord(number, code, time.perf_counter() - t0, False))
            report(f"restart {number} failed: {exc}")
            continue
        down = time.perf_counter() - t0
        records.append(RestartRecord(number, code, down, True))
        report(f"restart {number}: the server is ready again after {down:.1f} s down")
