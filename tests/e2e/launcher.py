"""Real servers for the end-to-end tests, and the one handle a test holds: `LiveServer`.

Two ways to start a server, both context managers that always stop what they started, both
serve.process.ManagedProcess: `serving(cfg, log_path)` runs the vLLM OpenAI server through
`ServerProcess` (the session's server, tensor parallel, Ray); `launched(workdir, *overrides,
config=...)` runs `python -m serve` as a subprocess (`Launcher`), the way an operator runs
it (TLS, restart supervision, drain on SIGTERM, replicas behind the router, the launcher's
own output). Output goes to files (pipes would fill and block); a start-up failure raises
LaunchError with the log's last lines.

A `LiveServer` builds URLs (`url_for("v1", "models")`), hands out configured clients
(`get_client`, `get_async_client`, `get_http_client`) and lists every log file its run
writes.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import psutil

from serve.config.deployment import DeploymentConfig, load_config
from serve.launch.server import ServerProcess
from serve.process import (
    PORTS_ENV,
    LaunchError,
    ManagedProcess,
    free_port,
    port_in_use,
    port_range,
    terminate,
)
from tests.conftest import CONFIGS, REPO

API_KEY = "test-key-not-a-secret"
T = TypeVar("T")


@dataclass(frozen=True)
class LiveServer:
    """A running server as a test sees it: where it answers, the key it wants, the model
    it serves, and the files its run writes."""

    root_url: str
    api_key: str
    model: str
    log_path: Path | None = None  # the vLLM server's log; None for a server started elsewhere
    launcher_logs: tuple[Path, ...] = ()  # `python -m serve`'s stdout and stderr, if it ran
    cert: Path | None = None  # the server's self-signed certificate, when it serves HTTPS
    proc: subprocess.Popen[bytes] | None = None  # what a test may signal: launcher or server

    def url_for(self, *parts: str) -> str:
        """`url_for("v1", "models")` is `<root_url>/v1/models`."""
        return "/".join([self.root_url, *(p.strip("/") for p in parts)])

    @property
    def base_url(self) -> str:
        """The OpenAI API's base URL (`<root_url>/v1`)."""
        return self.url_for("v1")

    @property
    def auth(self) -> dict[str, str]:
        """The header that carries the API key."""
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """How a client trusts this server: by its own certificate when it has one."""
        return ssl.create_default_context(cafile=str(self.cert)) if self.cert else True

    def get_client(self, **kw: Any) -> openai.OpenAI:
        """The OpenAI SDK client for this server: its key, no retries, 300 s timeout,
        trusting its certificate; keyword arguments override any of these."""
        return openai.OpenAI(**self._sdk_options(openai.DefaultHttpxClient, kw))

    def get_async_client(self, **kw: Any) -> openai.AsyncOpenAI:
        """`get_client`, for asyncio."""
        return openai.AsyncOpenAI(**self._sdk_options(openai.DefaultAsyncHttpxClient, kw))

    def _sdk_options(self, http_client: Callable[..., Any], kw: dict[str, Any]) -> dict[str, Any]:
        opts = {"base_url": self.base_url, "api_key": self.api_key, "max_retries": 0}
        if self.cert and "http_client" not in kw:
            opts["http_client"] = http_client(verify=self.verify)
        return {**opts, "timeout": 300, **kw}

    def get_http_client(self, *, auth: bool = True, **kw: Any) -> httpx.Client:
        """An httpx client on the root URL (probes, /invocations, raw bodies), sending the
        key unless `auth=False`; keyword arguments go to httpx.Client."""
        opts: dict[str, Any] = {"headers": self.auth if auth else {}, "timeout": 120}
        return httpx.Client(base_url=self.root_url, verify=self.verify, **{**opts, **kw})

    def client_env(self, **extra: str) -> dict[str, str]:
        """The environment of a `python -m clients` or `python -m benchmarks` subprocess aimed
        at this server: MEDGEMMA_BASE_URL and MEDGEMMA_API_KEY, no other MEDGEMMA_ setting;
        over HTTPS, SSL_CERT_FILE names the server's certificate (httpx trusts it then)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDGEMMA_")}
        trust = {"SSL_CERT_FILE": str(self.cert)} if self.cert else {}
        return {
            **env,
            "MEDGEMMA_BASE_URL": self.base_url,
            "MEDGEMMA_API_KEY": self.api_key,
            **trust,
            **extra,
        }

    def running(self) -> bool:
        """True while the process this run started (launcher or server) has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        """True if GET /health answers 200 now."""
        try:
            return (
                httpx.get(self.url_for("health"), verify=self.verify, timeout=5).status_code == 200
            )
        except httpx.HTTPError:
            return False

    def files(self) -> list[Path]:
        """Every log file the run writes: the launcher's output, then the server's log."""
        return [*self.launcher_logs, *([self.log_path] if self.log_path else [])]

    def text(self) -> str:
        """All of those files' text."""
        return "\n".join(p.read_text(errors="replace") for p in self.files() if p.exists())


def wait_until(
    check: Callable[[], T], timeout_s: float, what: str | Callable[[], str], interval_s: float = 0.5
) -> T:
    """Call `check` every `interval_s` until it returns something truthy, and return that.
    After `timeout_s`, raise TimeoutError with `what` (a callable is called then, so the
    message can carry the latest evidence)."""
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what() if callable(what) else what} (waited {timeout_s:.0f} s)")
        time.sleep(interval_s)
    return result


def text_after(path: Path, offset: int) -> str:
    """What was appended to a file after its first `offset` bytes."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


@contextmanager
def serving(
    cfg: DeploymentConfig, log_path: Path, environ: Mapping[str, str] | None = None
) -> Iterator[LiveServer]:
    """The vLLM OpenAI server for `cfg`, its output in `log_path`; ready on entry, stopped on
    exit. With no API key in `environ` the server takes any key (clients send "EMPTY")."""
    environ = dict(os.environ if environ is None else environ)
    with ServerProcess(cfg, log_path, environ=environ) as srv:
        yield LiveServer(
            srv.root_url, srv.api_key or "EMPTY", cfg.model_name, log_path, proc=srv.proc
        )


def free_ports(n: int) -> int:
    """The first of `n` consecutive TCP ports nothing listens on right now (a replicas
    config listens on its port and the n - 1 after it)."""
    span = port_range(os.environ.get(PORTS_ENV))
    top = span[1] if span else 65535  # all n in this worker's slice (tests/workers.py)
    while True:
        p = free_port()
        if p + n - 1 <= top and not any(port_in_use("127.0.0.1", p + k) for k in range(n)):
            return p


def engine_core(root: psutil.Process | int) -> psutil.Process | None:
    """The vLLM EngineCore process under `root` (a launcher or an API server, or its pid);
    vLLM names it via setproctitle."""
    parent = root if isinstance(root, psutil.Process) else psutil.Process(root)
    for child in parent.children(recursive=True):
        try:
            if "EngineCore" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


class Launcher(ManagedProcess):
    """`python -m serve` as a child process (serve.process.ManagedProcess), run from the
    repository with the test's API key: its stdout (the ready banner) in `out_path`, its
    stderr in `log_path`. Ready once it prints `base URL: <root>/v1`; the files named in
    `evidence` (its two, then the server's log) are quoted when it fails. Stopped with
    SIGTERM, as a service manager stops it: it drains and stops its servers."""

    name = "python -m serve"
    poll_interval_s = 0.5
    startup_timeout_s: float = 900.0
    stop_timeout_s = 90.0
    kill_wait_s = 30.0

    def __init__(
        self, cmd: list[str], out: Path, err: Path, evidence: Sequence[Path], timeout_s: float
    ) -> None:
        self.cmd, self.out_path, self.log_path, self.cwd = cmd, out, err, REPO
        self.evidence, self.startup_timeout_s = evidence, timeout_s
        self.root_url = ""

    def command_and_env(self) -> tuple[list[str], dict[str, str]]:
        return self.cmd, {**os.environ, "MEDGEMMA_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1"}

    def text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.evidence if p.exists())

    def after_ready(self, deadline: float) -> None:
        """Wait for the printed URL. Raises LaunchError with the files' last 3000 characters."""
        assert self.proc is not None and self.out_path is not None
        while time.monotonic() < deadline:
            found = re.search(r"^base URL: (\S+)/v1$", self.out_path.read_text(), re.M)
            if found is not None:
                self.root_url = found[1]
                return
            if self.proc.poll() is not None:
                raise LaunchError(
                    f"python -m serve exited with {self.proc.returncode}:\n{self.text()[-3000:]}"
                )
            time.sleep(self.poll_interval_s)
        raise LaunchError(
            f"python -m serve was not ready:\n{self.text()[-3000:]} "
            f"(waited {self.startup_timeout_s:.0f} s)"
        )


@contextmanager
def launched(
    workdir: Path,
    *overrides: str,
    config: Path = CONFIGS / "cpu-tiny.yaml",
    port: int | None = None,
    tls: tuple[Path, Path] | None = None,
    timeout_s: float = 900,
    args: Sequence[str] = (),
) -> Iterator[LiveServer]:
    """`python -m serve --config CONFIG` (configs/deployments/cpu-tiny.yaml unless given) on
    `port` (default: a free one) with an API key, `--set` overrides and, with `tls`
    (certificate, key), HTTPS; its files under `workdir` (the server's log, or a replicas
    config's logs, beside the launcher's output), and any other launcher `args`. Ready once
    the launcher prints its URL; stopped on exit with SIGTERM, as a service manager stops it."""
    if tls is not None:
        overrides = (*overrides, f"ssl_certfile={tls[0]}", f"ssl_keyfile={tls[1]}")
    model = load_config(config, list(overrides)).model_name
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "serve", "--config", str(config)]
    cmd += ["--port", str(port or free_port()), "--log-file", str(workdir / "server.log")]
    cmd += [arg for o in overrides for arg in ("--set", o)] + list(args)
    out, err = workdir / "launcher.out", workdir / "launcher.err"
    launcher = Launcher(cmd, out, err, [out, err, workdir / "server.log"], timeout_s)
    with launcher:
        cert = tls[0] if tls else None
        yield LiveServer(
            launcher.root_url,
            API_KEY,
            model,
            workdir / "server.log",
            (out, err),
            cert,
            launcher.proc,
        )


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 90) -> int | None:
    """SIGTERM (the launcher drains and stops its server), then SIGKILL its process group
    after `timeout_s`; its exit status."""
    return terminate(proc, timeout_s, kill_wait_s=Launcher.kill_wait_s)
