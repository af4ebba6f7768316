"""Supervision: keep a started vLLM server up, restarting it as the config's `restart` says.

vLLM's API server exits when its engine process dies (a crash, an OOM kill); with
`restart.enabled` the launcher then reaps what is left of the server's process group,
waits `restart.backoff_s` and starts it again on the same port, at most
`restart.max_restarts` times. Each restart is reported with the time from the death
being noticed to the server answering /health and /v1/models again.

A server whose process stays alive but whose /health has not answered for
`restart.unhealthy_after_s` counts as dead too: its process group is killed and it is
restarted the same way. vLLM's API server can hang in its own shutdown after its engine
dies (seen in CI: the engine killed under load behind the router, the API server logged
"[shutdown] MPClient: start" and then neither served nor exited for 15 minutes).

A planned restart (the fleet's rolling restart) takes the server's `restart_lock` while
it stops and starts the server: the supervisor only looks at the process while it holds
that lock itself, so it never reads a planned stop as a crash, and it keeps the lock while
it restarts a crashed server, so a planned restart waits for that to finish.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from serve.launch.server import ServerProcess
from serve.process import LaunchError


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
    liveness = Liveness()
    while not stopping():
        with lock:
            code = None if stopping() or server.proc is None else server.proc.poll()
            if code is None and not stopping() and liveness.hung(server, report):
                code = kill_hung(server)
            if code is not None:
                gave_up = restart(server, code, records, stopping, report)
                if gave_up is not None:
                    return gave_up, records
        time.sleep(poll_s)  # outside the lock: a planned restart may take it now
    return 0, records


@dataclass
class Liveness:
    """When the running server last answered /health (probed every `every_s`, or twice
    per `unhealthy_after_s` if that is shorter)."""

    every_s: float = 5.0
    proc: object = None  # the process the times below are about
    last_ok: float = 0.0
    last_probe: float = 0.0

    def hung(self, server: ServerProcess, report: Callable[[str], None]) -> bool:
        """Whether the server's process is alive but /health has failed for longer than
        `restart.unhealthy_after_s`. A new process (a restart) starts a new clock."""
        limit = server.cfg.restart.unhealthy_after_s
        now = time.monotonic()
        if not server.cfg.restart.enabled or limit is None or server.proc is None:
            return False
        if server.proc is not self.proc:
            self.proc, self.last_ok, self.last_probe = server.proc, now, 0.0
        if now - self.last_probe < min(self.every_s, limit / 2):
            return False
        self.last_probe = now
        if server.healthy(timeout_s=min(10.0, limit)):
            self.last_ok = time.monotonic()
            return False
        down = time.monotonic() - self.last_ok
        if down <= limit:
            return False
        report(
            f"the vLLM server's process is alive but /health has not answered for {down:.0f} s "
            f"(restart.unhealthy_after_s: {limit:g}); killing it"
        )
        return True


def kill_hung(server: ServerProcess) -> int:
    """SIGKILL the server's process group; its exit status (negative: the signal)."""
    assert server.proc is not None
    server.signal(signal.SIGKILL)
    return server.proc.wait(timeout=30)


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
