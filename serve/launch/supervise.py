"""Supervision: keep a started vLLM server up, restarting it as the config's `restart` says.

vLLM's API server exits when its engine process dies (a crash, an OOM kill); with
`restart.enabled` the launcher then reaps what is left of the server's process group,
waits `restart.backoff_s` and starts it again on the same port, at most
`restart.max_restarts` times. Each restart is reported with the time from the death
being noticed to the server answering /health and /v1/models again.

A planned restart (the fleet's rolling restart) takes the server's `restart_lock` while
it stops and starts the server: the supervisor only looks at the process while it holds
that lock itself, so it never reads a planned stop as a crash, and it keeps the lock while
it restarts a crashed server, so a planned restart waits for that to finish.
"""

from __future__ import annotations

import threading
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


def sleep_unless(stopping: Callable[[], bool], seconds: float, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stopping():
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def supervise(
    server: ServerProcess,
    stopping: Callable[[], bool],
    report: Callable[[str], None],
    poll_s: float = 0.5,
    restart_lock: threading.Lock | None = None,
) -> tuple[int, list[RestartRecord]]:
    """Watch a started server until `stopping()`; restart it on exit per `cfg.restart`
    (read at each exit: a planned restart may have changed the config).

    Returns (exit status for the launcher, the restarts made): 0 when stopped on request,
    else the status of the server's last exit."""
    lock = restart_lock or threading.Lock()
    records: list[RestartRecord] = []
    while not stopping():
        with lock:
            code = None if stopping() or server.proc is None else server.proc.poll()
            if code is not None:
                gave_up = restart(server, code, records, stopping, report)
                if gave_up is not None:
                    return gave_up, records
        time.sleep(poll_s)  # outside the lock: a planned restart may take it now
    return 0, records


def restart(
    server: ServerProcess,
    code: int,
    records: list[RestartRecord],
    stopping: Callable[[], bool],
    report: Callable[[str], None],
) -> int | None:
    """Handle one exit of the server with status `code`: restart it (appending to
    `records`) and return None, or return the status to give up with."""
    policy = server.cfg.restart
    if not policy.enabled:
        report(f"error: the vLLM server exited with status {code}; see {server.log_path}")
        return code or 1
    if len(records) >= policy.max_restarts:
        report(
            f"error: the vLLM server exited with status {code}; giving up after "
            f"{len(records)} restart(s) (restart.max_restarts); see {server.log_path}"
        )
        return code or 1
    number = len(records) + 1
    t0 = time.perf_counter()
    report(
        f"the vLLM server exited with status {code}; restart {number}/"
        f"{policy.max_restarts} in {policy.backoff_s:g} s"
    )
    server.stop(timeout_s=10)  # reap engine processes left in its group
    sleep_unless(stopping, policy.backoff_s)
    if stopping():
        return None
    try:
        server.start()
    except LaunchError as exc:
        if not stopping():
            records.append(RestartRecord(number, code, time.perf_counter() - t0, False))
            report(f"restart {number} failed: {exc}")
        return None
    down = time.perf_counter() - t0
    records.append(RestartRecord(number, code, down, True))
    report(f"restart {number}: the server is ready again after {down:.1f} s down")
    return None
