"""A child process the project manages: start it with its output in a log file, poll it
until it is ready (failing fast, with the log's last lines, if it exits), stop its whole
process group.

`ManagedProcess` is that life cycle, once; every process the project starts is one: the
vLLM server (serve.launch.server), vllm-router (serve.launch.router), Prometheus
(serve.monitor.prometheus), Orthanc (serve.pacs.orthanc) and the tests' `python -m serve`
(tests/e2e/launcher.py). The functions below it are its parts, usable on their own.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from serve.shared_memory import remove_left_behind, shared_memory_of


class LaunchError(RuntimeError):
    """The server could not be started; the message says why (with log lines)."""


def port_in_use(host: str, port: int) -> bool:
    """True if something already listens on host:port (or the address cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("", "0.0.0.0") else "0.0.0.0", port))
        except OSError:
            return True
    return False


PORTS_ENV = "MEDGEMMA_PORTS"


def port_range(text: str | None) -> tuple[int, int] | None:
    """`LOW-HIGH` (MEDGEMMA_PORTS) as a pair of ports, or None if unset (pure); ValueError
    names what is wrong."""
    if not text:
        return None
    low, sep, high = text.partition("-")
    if not (sep and low.strip().isdigit() and high.strip().isdigit()):
        raise ValueError(f"{PORTS_ENV}={text!r}: expected LOW-HIGH, e.g. 20000-26383")
    lo, hi = int(low), int(high)
    if not 1024 <= lo <= hi <= 65535:
        raise ValueError(f"{PORTS_ENV}={text!r}: want 1024 <= LOW <= HIGH <= 65535")
    return lo, hi


EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_SPAN_PORTS = 12768  # 20000-32767 below Linux's default ephemeral range


def below_ephemeral(text: str | None) -> tuple[int, int] | None:
    """The ports just below the kernel's ephemeral range (`ip_local_port_range`'s text,
    e.g. "32768\t60999"), or None if that leaves too few (pure)."""
    try:
        low = int((text or "").split()[0])
    except (IndexError, ValueError):
        return None
    high = low - 1
    lo = max(1024, high - DEFAULT_SPAN_PORTS + 1)
    return (lo, high) if high - lo >= 1000 else None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, drawn from MEDGEMMA_PORTS=LOW-HIGH if set,
    else from the ports just below the kernel's ephemeral range (20000-32767 on a default
    Linux), else the kernel's pick. Below the ephemeral range, no process's outgoing
    connection or kernel-picked port (vLLM's own) takes a port between its pick and its
    use; the test suite gives each parallel worker its own slice (tests/conftest.py)."""
    try:
        span = port_range(os.environ.get(PORTS_ENV))
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    if span is None:
        try:
            span = below_ephemeral(EPHEMERAL.read_text())
        except OSError:
            span = None
    if span is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])
    for _ in range(200):
        port = random.randint(*span)
        if not port_in_use(host, port):
            return port
    raise LaunchError(f"no free port in {span[0]}-{span[1]} ({PORTS_ENV}) after 200 tries")


def tail(path: Path, n: int = 40) -> str:
    """The last n lines of a log file ('' if it does not exist)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def failure_cause(log: str) -> str | None:
    """The last error a server log states (e.g. `ValueError: ...`), with the detail
    lines that follow it (pydantic puts the actual reason on the next line)."""
    lines = log.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        text = lines[i].split("] ", 1)[-1].strip() if "] " in lines[i] else lines[i].strip()
        if re.match(r"^[\w.]*(Error|Exception)\b.*:", text):
            detail = [
                ln.strip()
                for ln in lines[i + 1 : i + 4]
                if ln.startswith("  ") and not ln.strip().startswith(("File ", "For further"))
            ]
            return " ".join([text, *detail])[:600]
    return None


def death_message(what: str, log_path: Path) -> str:
    """One clear line (the cause, if the log states one), then the log's last lines."""
    last = tail(log_path, 25)
    cause = failure_cause(last)
    head = f"{what}: {cause}" if cause else what
    return f"{head}\nlast lines of {log_path}:\n{last}"


def wait_until_ready(
    proc: subprocess.Popen[bytes],
    urls: Sequence[str],
    *,
    timeout_s: float,
    log_path: Path,
    name: str = "the vLLM server",
    headers: Mapping[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    interval_s: float = 1.0,
) -> None:
    """Poll GET on every URL until each answers 200. Raises LaunchError, with the cause
    and last lines of the log, as soon as the process exits or once `timeout_s` passes
    (the process is left running then: the caller stops it)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5, verify=verify, headers=headers) as http:
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise LaunchError(
                    death_message(f"{name} exited with status {code} during start-up", log_path)
                )
            try:
                if all(http.get(url).status_code == 200 for url in urls):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(interval_s)
    raise LaunchError(death_message(f"{name} was not ready after {timeout_s:.0f} s", log_path))


def terminate(
    proc: subprocess.Popen[bytes],
    timeout_s: float,
    *,
    kill_wait_s: float = 10,
    reap_group: bool = False,
) -> int | None:
    """Stop a child started with `start_new_session=True`: SIGTERM to the process itself,
    wait up to `timeout_s`, then SIGKILL its whole process group and wait `kill_wait_s`.
    With `reap_group`, SIGKILL the group after a clean exit too (children that outlive
    their parent). Returns the exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=kill_wait_s)
    if reap_group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def group_gone(pgid: int, within_s: float, poll_s: float = 0.1) -> bool:
    """True once no process of the process group `pgid` is left (its engine processes
    exit shortly after the server they served), waiting up to `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def client_host(host: str) -> str:
    """The address a local client uses to reach a server bound to `host`."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


@dataclass(frozen=True)
class Listen:
    """A port a process will listen on, and how its busy-port line names it:
    `<what> N on HOST is already in use: stop what listens there or choose another <hint>`."""

    host: str
    port: int
    what: str = "port"
    hint: str = "port (--port N)"

    def busy_line(self) -> str:
        return (
            f"{self.what} {self.port} on {self.host} is already in use: stop what listens "
            f"there or choose another {self.hint}"
        )


class ManagedProcess:
    """A child process in its own session (`start_new_session=True`: one signal reaches its
    whole process group), its output in a log file (a pipe would fill and block).

    `start()` refuses a busy port with one line, starts the child, polls its ready URLs
    (failing fast with the log's cause and last lines if it exits), runs any extra
    readiness step, and stops the child if any of that fails. `stop()` sends SIGTERM,
    waits, then SIGKILLs the group. A context manager: started on entry, stopped on exit.

    Subclasses say what differs by overriding the hooks: `command_and_env` (required),
    `listens`, `check` and `prepare` (before the start), `ready_urls`, `ready_headers`,
    `verify` and `after_ready` (readiness), `abandon` (a failed start), and the class
    attributes below. `start()` raises `failure` (a LaunchError unless a subclass names
    its own error type), its message one line unless it carries the log's last lines.
    """

    name = "the process"  # in messages: "<name> exited with status N during start-up"
    failure: type[Exception] = LaunchError
    poll_interval_s: float = 1.0
    kill_wait_s: float = 10.0  # SIGKILL to giving up on the exit
    reap_group = False  # SIGKILL the group after a clean exit too (children that outlive it)
    log_path: Path  # stderr, and stdout unless `out_path` is set; tailed when it fails
    out_path: Path | None = None  # stdout's own file (a banner read apart from the errors)
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_s: float | None = None  # start() to ready
    health_s: float | None = None  # start() to every ready URL answering 200
    # The /dev/shm segments its processes mapped (seen when ready and at stop): unlinked
    # once the group is gone, as a process killed with SIGKILL cannot (vLLM's engine
    # leaves its 160 MiB message queue behind otherwise).
    shared_memory: frozenset[Path] = frozenset()

    # --- hooks -----------------------------------------------------------------------

    @property
    def startup_timeout_s(self) -> float:
        """Start to ready (the extra readiness step included), at most."""
        return 60.0

    @property
    def stop_timeout_s(self) -> float:
        """SIGTERM to SIGKILL."""
        return 10.0

    def command_and_env(self) -> tuple[Sequence[str], Mapping[str, str] | None]:
        """The child's command line and its whole environment (None: this process's)."""
        raise NotImplementedError

    def listens(self) -> Sequence[Listen]:
        """The ports the child will listen on: each must be free before it starts."""
        return ()

    def check(self) -> None:
        """Refuse, before anything is written or started, what would make the start fail
        (by default a busy port). Raises `failure` with one line."""
        for listen in self.listens():
            if port_in_use(listen.host, listen.port):
                raise self.failure(listen.busy_line())

    def prepare(self) -> None:
        """Write what the child reads (configuration files) before it starts."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def ready_urls(self) -> Sequence[str]:
        """URLs that answer 200 once the child is ready (none: ready once started)."""
        return ()

    def ready_headers(self) -> Mapping[str, str]:
        return {}

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """How the readiness poll trusts the child's certificate."""
        return True

    def after_ready(self, deadline: float) -> None:
        """An extra readiness step once the ready URLs answer, to finish by `deadline`
        (time.monotonic()). Raises LaunchError."""

    def abandon(self, exc: BaseException) -> None:
        """Clean up after a failed start (`exc`): stop the child."""
        self.stop()

    # --- the life cycle --------------------------------------------------------------

    def start(self) -> Self:
        """Start the child and wait until it is ready. Raises `failure`."""
        self.check()
        self.prepare()
        cmd, env = self.command_and_env()
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.startup_timeout_s
        with contextlib.ExitStack() as files:
            log = files.enter_context(open(self.log_path, "ab"))
            out = files.enter_context(open(self.out_path, "ab")) if self.out_path else None
            self.proc = subprocess.Popen(
                list(cmd),
                stdout=out or log,
                stderr=log if out else subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if env is None else dict(env),
                cwd=self.cwd,
                start_new_session=True,  # its own process group: we signal the whole tree
            )
        try:
            wait_until_ready(
                self.proc,
                self.ready_urls(),
                timeout_s=deadline - time.monotonic(),
                log_path=self.log_path,
                name=self.name,
                headers=self.ready_headers(),
                verify=self.verify,
                interval_s=self.poll_interval_s,
            )
            self.health_s = time.perf_counter() - t0
            self.after_ready(deadline)
            self.shared_memory = frozenset(shared_memory_of(self.proc.pid))
        except BaseException as exc:
            self.abandon(exc)
            if isinstance(exc, LaunchError) and not isinstance(exc, self.failure):
                raise self.failure(str(exc)) from None
            raise
        self.started_s = time.perf_counter() - t0
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send a signal to the child's whole process group."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM to the child, wait up to `timeout_s` (default `stop_timeout_s`), then
        SIGKILL its group. Returns the exit status (None if it was never started)."""
        if self.proc is None:
            return None
        wait = self.stop_timeout_s if timeout_s is None else timeout_s
        mapped = set(self.shared_memory)
        if self.proc.poll() is None:  # (once reaped, its pid may be another process's)
            mapped |= shared_memory_of(self.proc.pid)
        code = terminate(self.proc, wait, kill_wait_s=self.kill_wait_s, reap_group=self.reap_group)
        if group_gone(self.proc.pid, within_s=5):
            remove_left_behind(mapped)
            self.shared_memory = frozenset()
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
