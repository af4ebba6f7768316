"""Start the vLLM OpenAI server for a deployment config, wait until it is ready, stop it.

`ServerProcess` is the one way a server is run: by `python -m serve`, by the test
fixtures and by the benchmarks. The life cycle (a log file, a busy port refused, poll,
fail fast, stop the group) is serve.process.ManagedProcess's; what is vLLM's is here: the
command, the ready URLs and key, TLS, the image + text probe, the drain on stop.
"""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serve.command.argv import audit_file, local_server_env, probes_images, server_command
from serve.config.deployment import DeploymentConfig
from serve.launch.preflight import preflight
from serve.launch.probe import ProbeResult, probe
from serve.process import LaunchError, Listen, ManagedProcess, client_host, death_message


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
class ServerProcess(ManagedProcess):
    """A running vLLM OpenAI server. Use as a context manager, or call start()/stop().

    Ready once /health and /v1/models answer 200 (with the key), then (with `ready_probe`)
    once one image + text request succeeds (serve.launch.probe). `stop()` sends SIGTERM to
    the API server only (vLLM drains in-flight requests for up to `drain_timeout_s`, then
    stops its engine: a worker that received it directly would die at once and take the
    requests it is running with it), waits, then SIGKILLs the group."""

    cfg: DeploymentConfig
    log_path: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    proc: subprocess.Popen[bytes] | None = None
    started_s: float | None = None  # start() to ready
    health_s: float | None = None  # start() to /health and /v1/models answering 200
    ready_probe: bool = True  # False: ready at /health (a file server; start-up A/B runs)
    launcher_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    name = "the vLLM server"
    kill_wait_s = 30.0
    reap_group = True  # engine workers may outlive the API process

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
        """The key this launcher's own requests (readiness, probe) send: $api_key_env's,
        else, with service keys only, a random one made for this launcher alone."""
        key = self.environ.get(self.cfg.api_key_env) or None
        if key is None and self.cfg.auth.keys_file is not None:
            key = self.launcher_key
        return key

    @property
    def audit_path(self) -> Path | None:
        """The audit trail the guard writes (with `auth.keys_file`), else None."""
        return audit_file(self.cfg, self.log_path)

    @property
    def startup_timeout_s(self) -> float:
        return self.cfg.startup_timeout_s

    @property
    def stop_timeout_s(self) -> float:
        """vLLM drains in-flight requests for up to `drain_timeout_s` on SIGTERM."""
        return self.cfg.drain_timeout_s + 10

    def command(self, model_path: str) -> tuple[list[str], dict[str, str]]:
        keyed = {**self.environ, self.cfg.api_key_env: self.api_key or ""}
        env = local_server_env(self.cfg, keyed)
        if (audit := self.audit_path) is not None:
            env.setdefault("MEDGEMMA_GUARD_AUDIT_FILE", str(audit.absolute()))
        return server_command(self.cfg, model_path), env

    def check(self) -> None:
        """The pre-flight first (its PreflightError is a LaunchError and a ConfigError: the
        files the config names are not usable here), then the busy-port check."""
        preflight(self.cfg, environ=self.environ)
        super().check()

    def command_and_env(self) -> tuple[list[str], dict[str, str]]:
        cmd, extra_env = self.command(model_to_load(self.cfg))  # builds a stand-in first
        return cmd, {**self.environ, **extra_env}

    def listens(self) -> list[Listen]:
        return [Listen(self.cfg.host, self.cfg.port)]

    def ready_urls(self) -> list[str]:
        return [f"{self.root_url}/health", f"{self.base_url}/models"]

    def ready_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def after_ready(self, deadline: float) -> None:
        if self.ready_probe:
            self.prove(deadline)

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

    def healthy(self, timeout_s: float = 10) -> bool:
        """Whether GET /health answers 200 within `timeout_s` (no key: it is outside
        vLLM's key check and the guard's)."""
        try:
            r = httpx.get(f"{self.root_url}/health", timeout=timeout_s, verify=self.verify)
        except httpx.HTTPError:
            return False
        return r.status_code == 200
