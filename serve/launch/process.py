"""Start the vLLM OpenAI server for a deployment config, wait until it is ready, stop it.

`ServerProcess` is the one way a server is run: by `python -m serve`, by the test
fixtures and by the benchmarks. Its output goes to a log file (a pipe would fill and
block). `wait_until_ready` is the one readiness poll (the vLLM server's and the fake
endpoint's): it fails fast, with the log's last lines, if the child exits.
"""

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
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from serve.config.deployment import DeploymentConfig
from serve.launch.argv import local_server_env, server_command
from serve.launch.probe import ProbeResult, probe, probes_images


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


def model_to_load(cfg: DeploymentConfig) -> str:
    """The model folder or hub id vLLM loads for a config; builds the stand-in on demand."""
    if cfg.stand_in is not None:
        from serve.standin import tiny_model

        return str(tiny_model.ensure(cfg.stand_in.preset, cfg.stand_in.seed))
    assert cfg.model is not None
    return cfg.model


def client_host(host: str) -> str:
    """The address a local client uses to reach a server bound to `host`."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


@dataclass
class ServerProcess:
    """A running vLLM OpenAI server. Use as a context manager, or call start()/stop()."""

    cfg: DeploymentConfig
    log_path: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    proc: subprocess.Popen[bytes] | None = None
    started_s: float | None = None  # start() to ready
    health_s: float | None = None  # start() to /health and /v1/models answering 200
    ready_probe: bool = True  # False: ready at /health (a file server; start-up A/B runs)

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def root_url(self) -> str:
        scheme = "https" if self.cfg.ssl_certfile else "http"
        return f"{scheme}://{client_host(self.cfg.host)}:{self.cfg.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """How the readiness check trusts the server: with TLS, the system CAs plus the
        configured certificate (so a self-signed one works). The host name is not checked:
        the check reaches the server by a local address its certificate need not name."""
        if self.cfg.ssl_certfile is None:
            return True
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cafile=str(self.cfg.ssl_certfile))
        ctx.check_hostname = False
        return ctx

    @property
    def api_key(self) -> str | None:
        return self.environ.get(self.cfg.api_key_env) or None

    def command(self, model_path: str) -> tuple[list[str], dict[str, str]]:
        return server_command(self.cfg, model_path), local_server_env(self.cfg, self.environ)

    def start(self) -> ServerProcess:
        """Start the server and wait until it is ready: /health and /v1/models answer 200,
        then (with `ready_probe`) one image + text request succeeds. Raises LaunchError."""
        if port_in_use(self.cfg.host, self.cfg.port):
            raise LaunchError(
                f"port {self.cfg.port} on {self.cfg.host} is already in use: stop what listens "
                f"there or choose another port (--port N)"
            )
        model_path = model_to_load(self.cfg)
        cmd, extra_env = self.command(model_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**self.environ, **extra_env}
        t0, deadline = time.perf_counter(), time.monotonic() + self.cfg.startup_timeout_s
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: we signal the whole tree
            )
        try:
            wait_until_ready(
                self.proc,
                [f"{self.root_url}/health", f"{self.base_url}/models"],
                timeout_s=deadline - time.monotonic(),
                log_path=self.log_path,
                headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else {},
                verify=self.verify,
            )
            self.health_s = time.perf_counter() - t0
            if self.ready_probe:
                self.prove(deadline)
        except BaseException:
            self.stop()
            raise
        self.started_s = time.perf_counter() - t0
        return self

    def prove(self, deadline: float, interval_s: float = 1.0) -> ProbeResult | None:
        """After /health: send the readiness probe (serve.launch.probe: one image + text
        chat completion, text only for a text-only model) until it returns 200. A 4xx
        fails at once (the server refuses the request: a wrong key, an image it cannot
        take); no answer or a 5xx is retried until `deadline` (time.monotonic()).
        Raises LaunchError, with the log's last lines if the process exits."""
        assert self.proc is not None
        with_image = probes_images(self.cfg.limit_mm_per_prompt)
        what = "image + text" if with_image else "text"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise LaunchError(
                    death_message(
                        f"the vLLM server exited with status {code} during its {what} probe",
                        self.log_path,
                    )
                )
            left = deadline - time.monotonic()
            result = probe(
                self.base_url,
                self.cfg.model_name,
                with_image=with_image,
                api_key=self.api_key,
                timeout_s=max(1.0, min(left, 300.0)),
                verify=self.verify,
            )
            if result.ok:
                return result
            if not result.retryable:
                raise LaunchError(
                    f"the vLLM server answers /health but its {what} probe failed: "
                    f"{result.detail} (log: {self.log_path})"
                )
            if time.monotonic() + interval_s >= deadline:
                raise LaunchError(
                    death_message(
                        f"the vLLM server answers /health but its {what} probe had not "
                        f"succeeded after {self.cfg.startup_timeout_s:.0f} s ({result.detail})",
                        self.log_path,
                    )
                )
            time.sleep(interval_s)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, timeout_s: float = 10) -> bool:
        """Whether GET /health answers 200 within `timeout_s` (no key: it is outside
        vLLM's key check and the guard's)."""
        try:
            r = httpx.get(f"{self.root_url}/health", timeout=timeout_s, verify=self.verify)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def signal(self, sig: int) -> None:
        """Send a signal to the server's whole process group."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM to the API server (vLLM drains in-flight requests for up to
        `drain_timeout_s`, then stops its engine), wait, then SIGKILL the group. Only the
        API server gets the SIGTERM: a worker that receives it directly dies at once and
        takes the requests it is running with it."""
        if self.proc is None:
            return None
        wait = self.cfg.drain_timeout_s + 10 if timeout_s is None else timeout_s
        # Engine workers may outlive the API process: reap_group makes sure the group is gone.
        return terminate(self.proc, wait, kill_wait_s=30, reap_group=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
