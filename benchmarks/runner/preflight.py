"""Checks before any load is sent, server identity snapshots, and starting the scenario's
deployment (`start_deployment`, and `server_for` behind --start-server).

`check_server` fails with a clear message when nothing answers at the base URL, the API
key is refused, or the server does not serve the scenario's model. `probe` sends the
run's first prepared request once, unstreamed with one output token, so that a request
the server rejects (too many images, a context too long) is named before the load.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from benchmarks.runner.errors import BenchError
from benchmarks.runner.prepared import PreparedRequest
from benchmarks.runner.scenario import Scenario
from clients.error_body import error_message

if TYPE_CHECKING:
    from serve.launch.server import ServerProcess


def root_url(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port (where /health and /metrics live)."""
    base = base_url.rstrip("/")
    return base.removesuffix("/v1")


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def answers(base_url: str, timeout_s: float = 3.0) -> bool:
    """True if an HTTP server answers at the base URL's /models (whatever the status)."""
    try:
        httpx.get(f"{base_url.rstrip('/')}/models", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return True


def check_server(base_url: str, api_key: str | None, model: str) -> dict[str, Any]:
    """GET /models: the server's model list. Raises BenchError naming the problem."""
    url = f"{base_url.rstrip('/')}/models"
    try:
        resp = httpx.get(url, headers=auth_headers(api_key), timeout=10)
    except httpx.HTTPError as exc:
        raise BenchError(
            f"cannot reach {url} ({type(exc).__name__}: {exc}); is the server running? "
            "Start one (make serve, or "
            "python -m serve --config configs/deployments/cpu-bench.yaml) "
            "or pass --start-server"
        ) from None
    if resp.status_code == 401:
        raise BenchError(
            f"{url} refused the API key (HTTP 401): set the scenario's api_key_env variable "
            "to the server's key"
        )
    if resp.status_code != 200:
        raise BenchError(f"{url} answered HTTP {resp.status_code}: {resp.text[:300]}")
    try:
        data = resp.json()
        served = [m["id"] for m in data["data"]]
    except (ValueError, KeyError, TypeError):
        raise BenchError(
            f"{url} is not an OpenAI-compatible model list: {resp.text[:200]}"
        ) from None
    if model not in served:
        raise BenchError(
            f"the server at {base_url} does not serve model {model!r}; it serves {served}. "
            "Set `model:` in the scenario (or --set model=NAME)"
        )
    return dict(data)


def probe(base_url: str, api_key: str | None, req: PreparedRequest, timeout_s: float) -> None:
    """Send one prepared request (not streamed, 1 output token). Raises BenchError."""
    body = json.loads(req.body)
    body.update(stream=False, max_tokens=1)
    body.pop("stream_options", None)
    body.pop("min_tokens", None)
    url = f"{base_url.rstrip('/')}/chat/completions"
    try:
        resp = httpx.post(url, json=body, headers=auth_headers(api_key), timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise BenchError(f"probe request to {url} failed: {type(exc).__name__}: {exc}") from None
    if resp.status_code != 200:
        msg = error_message(resp.content) or resp.text
        raise BenchError(
            f"the server rejected the scenario's first request (HTTP {resp.status_code}): "
            f"{msg[:400]}"
        )


def snapshot(url: str, api_key: str | None = None) -> str | None:
    """GET a text endpoint (e.g. /metrics, /version); None if it does not answer 200."""
    try:
        resp = httpx.get(url, headers=auth_headers(api_key), timeout=10)
    except httpx.HTTPError:
        return None
    return resp.text if resp.status_code == 200 else None


def start_deployment(
    scenario: Scenario,
    port: int,
    overrides: Sequence[str] = (),
    *,
    what: str = "the deployment",
    log_name: str = "bench-server",
    environ: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start the scenario's deployment (its `deployment_set`, then `overrides`, as
    key=value strings) on 127.0.0.1:port, logging to logs/LOG_NAME-PORT.log; return it
    once it is ready. Raises BenchError naming `what` (the caller stops the server)."""
    from serve.config.deployment import ConfigError, load_config
    from serve.config.yaml_file import override_strings
    from serve.launch.server import ServerProcess
    from serve.process import LaunchError

    sets = override_strings(scenario.deployment_set)
    try:
        cfg = load_config(
            scenario.deployment, [*sets, *overrides, f"port={port}", "host=127.0.0.1"]
        )
    except ConfigError as exc:
        raise BenchError(f"cannot start {what}: {exc}") from None
    log = Path("logs") / f"{log_name}-{cfg.port}.log"
    server = ServerProcess(cfg, log, environ=dict(environ if environ is not None else os.environ))
    label = f"{what} ({' '.join(overrides)})" if overrides else what
    print(f"starting {label}: {scenario.deployment} on port {port}, log {log} ...", flush=True)
    try:
        server.start()
    except LaunchError as exc:
        raise BenchError(f"{what} did not start: {exc}") from None
    print(f"{what} ready in {server.started_s:.0f} s", flush=True)
    return server


@contextlib.contextmanager
def server_for(
    scenario: Scenario,
    base_url: str,
    start: bool,
    environ: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess | None]:
    """Yield the scenario's deployment, started on base_url's port, if nothing answers at
    base_url and `start`; else None (the server already there is used). The server is
    stopped on exit."""
    if answers(base_url) or not start:
        yield None
        return
    parts = urlsplit(base_url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise BenchError(f"--start-server starts a local server only, not one at {base_url}")
    server = start_deployment(scenario, parts.port or 80, environ=environ)
    try:
        yield server
    finally:
        server.stop()
