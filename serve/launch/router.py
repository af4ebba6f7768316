"""vllm-router as a managed child process, and the admin routes a rolling restart uses.

`Router(cfg, urls, log_path, api_key)` runs vllm-router with the config's router command
line (serve.command.replicas.router_argv) in front of the replicas at `urls`, on 127.0.0.1
(the edge, serve.edge, is what clients reach); it is ready once /health and /v1/models
answer (the latter forwarded to a replica, with the replicas' internal key). Its
management routes (/add_worker, /remove_worker, /list_workers) are thus reached on
loopback only, by the launcher's rolling restarts. The life cycle is
serve.process.ManagedProcess's.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from serve.command.replicas import (
    REPLICA_HOST,
    WORKER_STARTUP_TIMEOUT_S,
    ports,
    router_argv,
    router_command,
)
from serve.config.deployment import DeploymentConfig
from serve.launch.rejoin import RouterView, successes, worker_health
from serve.process import LaunchError, Listen, ManagedProcess, client_host


class Router(ManagedProcess):
    """vllm-router in its own process group, logging to a file. Use as a context manager,
    or call start()/stop()."""

    name = "vllm-router"
    startup_timeout_s: float = 90.0
    poll_interval_s = 0.5
    reap_group = True

    def __init__(
        self,
        cfg: DeploymentConfig,
        urls: list[str],
        log_path: Path,
        api_key: str | None = None,
    ) -> None:
        self.cfg, self.urls, self.log_path, self.api_key = cfg, urls, log_path, api_key

    @property
    def root_url(self) -> str:
        return f"http://{REPLICA_HOST}:{ports(self.cfg).router}"

    def command_and_env(self) -> tuple[list[str], None]:
        return router_command(router_argv(self.cfg, self.urls)), None

    def listens(self) -> list[Listen]:
        p = ports(self.cfg)
        return [
            Listen(REPLICA_HOST, p.router, "vllm-router port", "router.metrics_port (+ 1)"),
            Listen(self.cfg.host, p.metrics, "vllm-router metrics port", "(router.metrics_port)"),
        ]

    def ready_urls(self) -> list[str]:
        return [f"{self.root_url}/health", f"{self.root_url}/v1/models"]

    def ready_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def remove_worker(self, url: str) -> None:
        """Take a replica out (POST /remove_worker): no new request goes to it; the ones it
        has keep running. Raises LaunchError."""
        self._admin("remove_worker", url, timeout_s=10)

    def add_worker(self, url: str) -> None:
        """Put a replica back (POST /add_worker; vllm-router first waits up to
        WORKER_STARTUP_TIMEOUT_S for its /health). Raises LaunchError."""
        self._admin("add_worker", url, timeout_s=WORKER_STARTUP_TIMEOUT_S + 10)

    def worker_urls(self) -> list[str]:
        """The replicas the router sends requests to (GET /list_workers)."""
        r = httpx.get(f"{self.root_url}/list_workers", timeout=10)
        r.raise_for_status()
        return list(r.json()["urls"])

    def view(self) -> RouterView:
        """The router's own view of its replicas: each listed one's health (GET /workers)
        and the requests it answered (its metrics port). Raises LaunchError."""
        try:
            workers = httpx.get(f"{self.root_url}/workers", timeout=10)
            workers.raise_for_status()
            metrics = httpx.get(self.metrics_url, timeout=10)
            metrics.raise_for_status()
            health = worker_health(workers.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise LaunchError(f"vllm-router did not show its replicas: {exc}") from None
        return RouterView(health, successes(metrics.text))

    @property
    def metrics_url(self) -> str:
        return f"http://{client_host(self.cfg.host)}:{ports(self.cfg).metrics}/metrics"

    def _admin(self, route: str, url: str, timeout_s: float) -> None:
        try:
            r = httpx.post(f"{self.root_url}/{route}", params={"url": url}, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise LaunchError(f"vllm-router did not answer POST /{route}: {exc}") from None
        if r.status_code != 200 and "already exists" not in r.text:  # added twice is added
            raise LaunchError(
                f"vllm-router answered POST /{route}?url={url} with {r.status_code}: {r.text[:200]}"
            )
