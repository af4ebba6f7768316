"""A child process the project manages: start it with its output in a log file, poll it
until it is ready (failing fast, with the log's last lines, if it exits), stop its whole
process group. Used by every process the project starts: the vLLM server, the router,
Prometheus, Orthanc and the tests' launcher."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx


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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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


def client_host(host: str) -> str:
    """The address a local client uses to reach a server bound to `host`."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
