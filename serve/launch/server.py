"""Start the vLLM OpenAI server for a deployment config, wait until it is ready, stop it.

`ServerProcess` is the one way a server is run: by `python -m serve`, by the test
fixtures and by the benchmarks. Its output goes to a log file (a pipe would fill and
block); the life cycle (poll, fail fast, stop the group) is serve.process's.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from serve.command.argv import local_server_env, probes_images, server_command
from serve.config.deployment import DeploymentConfig
from serve.launch.preflight import preflight
from serve.launch.probe import ProbeResult, probe
from serve.process import (
    LaunchError,
    client_host,
    death_message,
    port_in_use,
    terminate,
    wait_until_ready,
)


def model_to_load(cfg: DeploymentConfig) -> str:
    """The model folder or hub id vLLM loads for a config; builds the stand-in and its
    stand-in LoRA adapters on demand."""
    if cfg.stand_in is not None:
        from serve.launch.lora import adapter_paths
        from serve.standin import tiny_model

        folder = tiny_model.ensure(cfg.stand_in.preset, cfg.stand_in.seed)
        adapter_paths(cfg)  # the stand-in adapters the command names
        return str(folder)
    assert cfg.model is not None
    return cfg.model


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
        then (with `ready_probe`) one image + text request succeeds. Raises LaunchError;
        the pre-flight's PreflightError (a LaunchError and a ConfigError) comes first when
        the files the config names are not usable here."""
        preflight(self.cfg)
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
