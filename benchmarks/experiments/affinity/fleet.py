"""The affinity experiment's servers: the scenario's replicas, started once side by side as
`python -m serve` starts them (each on a free port, without supervision), and one
vllm-router per policy over the same replicas, each with the config's router settings and
only `router.policy` changed.

Everything that starts or stops a process goes through serve.launch.fleet's public
functions, called from `start_replicas`, `start_router` and `stop` only (one place to
re-point when that module moves).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.runner.errors import BenchError
from benchmarks.runner.scenario import Scenario

if TYPE_CHECKING:
    from serve.config.deployment import DeploymentConfig
    from serve.launch.router import Router
    from serve.launch.server import ServerProcess

# vllm-router 0.1.17 logs each consistent_hash decision at info level in this form.
HASH_ROUTE = re.compile(
    r"Consistent hash routing: key='header:x-session-id:([^']*)' -> worker='([^']*)'"
)


def deployment(scenario: Scenario) -> DeploymentConfig:
    """The scenario's deployment config; it must run two replicas or more."""
    from serve.config.deployment import ConfigError, load_config
    from serve.config.yaml_file import override_strings

    try:
        cfg = load_config(scenario.deployment, override_strings(scenario.deployment_set))
    except ConfigError as exc:
        raise BenchError(f"cannot use the scenario's deployment: {exc}") from None
    if cfg.replicas is None or cfg.replicas.count < 2:
        raise BenchError(
            f"{scenario.deployment}: affinity compares routers in front of several replicas; "
            "give a deployment with a `replicas:` section of count 2 or more "
            "(e.g. configs/deployments/cpu-tiny-2replicas.yaml)"
        )
    return cfg


def policy_config(
    cfg: DeploymentConfig, policy: str, port: int, metrics_port: int
) -> DeploymentConfig:
    """The deployment config for one more router: only its policy and ports differ."""
    router = cfg.router.model_copy(update={"policy": policy, "metrics_port": metrics_port})
    return cfg.model_copy(update={"port": port, "router": router})


def session_workers(router_log: str) -> dict[str, set[str]]:
    """Conversation id -> the replicas consistent_hash sent its requests to, from the
    router's log lines whose hash key came from the session header."""
    out: dict[str, set[str]] = {}
    for session, worker in HASH_ROUTE.findall(router_log):
        out.setdefault(session, set()).add(worker)
    return out


def start_replicas(cfg: DeploymentConfig, log_dir: Path) -> list[ServerProcess]:
    """The config's replicas, placed as `python -m serve` places them, each on a free port,
    started side by side; all stopped again if one does not start. Raises BenchError."""
    from serve.command.replicas import PlacementError, replica_configs
    from serve.launch.fleet import start_all, stop_all
    from serve.launch.placement import placement
    from serve.launch.server import ServerProcess, model_to_load
    from serve.process import free_port

    try:
        devices = placement(cfg)
    except PlacementError as exc:
        raise BenchError(str(exc)) from None
    replicas = [r.model_copy(update={"port": free_port()}) for r in replica_configs(cfg, devices)]
    servers = [ServerProcess(r, log_dir / f"replica{i}.log") for i, r in enumerate(replicas)]
    kind = "cores" if cfg.device == "cpu" else "GPUs"
    for i, s in enumerate(servers):
        print(f"starting replica {i} on port {s.cfg.port} ({kind} {devices[i]})", flush=True)
    t0 = time.perf_counter()
    try:
        model_to_load(cfg)  # build the stand-in once, not in each replica's thread
        failed = start_all(servers)
        if failed:
            i, why = failed[0]
            raise BenchError(
                f"replica {i} did not become healthy: {str(why).splitlines()[0]}; "
                f"see its log {servers[i].log_path}"
            )
    except BaseException:
        stop_all(servers)
        raise
    print(f"replicas ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return servers


def start_router(
    cfg: DeploymentConfig, policy: str, urls: list[str], log_dir: Path, api_key: str | None
) -> Router:
    """A vllm-router with `policy` in front of `urls`, on free ports. Raises BenchError."""
    from serve.launch.router import Router
    from serve.process import LaunchError, free_port, port_in_use

    # The router listens on its metrics port + 1 (serve.command.replicas.ports): both free.
    metrics = free_port()
    while port_in_use("127.0.0.1", metrics + 1):
        metrics = free_port()
    router = Router(
        policy_config(cfg, policy, free_port(), metrics),
        urls,
        log_dir / f"router-{policy}.log",
        api_key,
    )
    try:
        router.start()
    except LaunchError as exc:
        raise BenchError(
            f"vllm-router ({policy}) did not start: {str(exc).splitlines()[0]}; "
            f"see {router.log_path}"
        ) from None
    print(f"router {policy}: {router.root_url}", flush=True)
    return router


def stop(servers: list[ServerProcess], routers: Sequence[Router]) -> None:
    """The routers first, then the replicas (side by side, each drains)."""
    from serve.launch.fleet import stop_all

    for router in routers:
        router.stop()
    stop_all(servers)


@contextlib.contextmanager
def fleet(
    cfg: DeploymentConfig, policies: Sequence[str], log_dir: Path, api_key: str | None
) -> Iterator[tuple[list[ServerProcess], dict[str, Router]]]:
    """The replicas (each on a free port) and one router per policy in front of them, all
    stopped on exit. Raises BenchError naming a replica or router that did not start."""
    from serve.command.replicas import replica_url

    servers = start_replicas(cfg, log_dir)
    urls = [replica_url(s.cfg) for s in servers]
    routers: dict[str, Router] = {}
    try:
        for policy in policies:
            routers[policy] = start_router(cfg, policy, urls, log_dir, api_key)
        yield servers, routers
    finally:
        stop(servers, list(routers.values()))
