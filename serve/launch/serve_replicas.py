"""`python -m serve` for a replicas config: every replica, vllm-router in front of them,
and the edge (serve.edge: nginx and its key check) in front of the router.

`run` checks the placement, every port and nginx before starting anything, starts the
replicas side by side (each a ServerProcess with its own log, all requiring an internal
key made for this launch, which only the edge sends), starts the router on loopback once
all are ready, then the edge on the config's host and port, prints the ready banner
(serve.launch.banner), and hands the running fleet to serve.launch.fleet.Fleet:
supervision, a rolling restart on SIGHUP (the config read again with the same
command-line overrides), and on SIGTERM/SIGINT the edge stopped first, then the router,
then the replicas drained. An edge process that exits (nginx, or the key check, without
which nginx refuses every API request) is started again under the config's `restart`
policy, as vllm-router is (`keep_edge`); past it, the deployment stops.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from serve.attention.support import image_mask_active
from serve.command.replicas import PlacementError, replica_configs, replica_url
from serve.config.deployment import DeploymentConfig
from serve.config.restart import RestartPolicy
from serve.edge.plan import usage_url
from serve.edge.process import Edge, find_nginx
from serve.guard.usage import USAGE_URL_ENV
from serve.launch.banner import ready_banner
from serve.launch.fleet import Fleet, say, start_all, stop_all
from serve.launch.placement import busy_ports, placement
from serve.launch.rollout import restart_refusal
from serve.launch.router import Router
from serve.launch.server import ServerProcess, model_to_load
from serve.process import LaunchError


def keep_edge(edge: Edge, policy: RestartPolicy, restarts: int) -> tuple[int, int | None]:
    """If a process of the edge has exited, start it again under `policy` (`restarts` made
    so far). Returns the restarts made and None, or an exit status for the deployment when
    the edge may not be restarted or does not come back."""
    dead = edge.dead()
    if dead is None:
        return restarts, None
    where = f"see {edge.log_path}"
    if why := restart_refusal(policy, restarts):
        say(f"error: {dead} ({why}); stopping ({where})")
        return restarts, 1
    restarts += 1
    say(f"{dead}; restart {restarts}/{policy.max_restarts} of the edge")
    t0 = time.perf_counter()
    try:
        edge.revive()
    except LaunchError as exc:
        say(f"error: the edge did not come back: {str(exc).splitlines()[0]}; stopping ({where})")
        return restarts, 1
    say(f"the edge restarted: answering again after {time.perf_counter() - t0:.1f} s")
    return restarts, None


def run(cfg: DeploymentConfig, log_dir: Path, reload: Callable[[], DeploymentConfig]) -> int:
    """Start replicas and router, print the ready lines, supervise; SIGHUP rolls out the
    config `reload` returns; SIGTERM/SIGINT stop everything."""
    try:
        devices = placement(cfg)
    except PlacementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    busy = busy_ports(cfg)
    if busy:
        print(f"error: {busy[0]}", file=sys.stderr)
        return 1
    try:
        find_nginx()
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    internal_key = secrets.token_urlsafe(32)  # the replicas' key: only the edge sends it
    # The replicas take the internal key only, and report each request's numbers to the
    # edge's key check (its audit line's tokens and images, the services' token limits).
    replica_env = {**os.environ, cfg.api_key_env: internal_key, USAGE_URL_ENV: usage_url(cfg)}
    replicas = replica_configs(cfg, devices)
    servers = [
        ServerProcess(rep, log_dir / f"serve-{cfg.port}-replica{i}.log", environ=replica_env)
        for i, rep in enumerate(replicas)
    ]
    client_key = os.environ.get(cfg.api_key_env) or None
    urls = [replica_url(r) for r in replicas]
    router = Router(cfg, urls, log_dir / f"router-{cfg.port}.log", internal_key)
    edge = Edge(cfg, log_dir, internal_key, client_key)
    stopping, ready, hup = threading.Event(), threading.Event(), threading.Event()
    fleet = Fleet(cfg, devices, servers, router, stopping)

    def on_signal(signum: int, _frame: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        print(f"\nstopping ({signal.Signals(signum).name})...", file=sys.stderr, flush=True)
        if not ready.is_set():  # still starting: end the start-up waits now
            edge_procs = [p.proc for p in edge.processes()]
            for proc in [s.proc for s in servers] + [router.proc] + edge_procs:
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    def on_hup(_signum: int, _frame: object) -> None:
        if ready.is_set():
            hup.set()  # the main loop acts on it
        elif not stopping.is_set():
            os.write(2, b"SIGHUP during start-up: ignored\n")  # unbuffered: safe in a handler

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    for i, s in enumerate(servers):
        print(
            f"starting replica {i} of {cfg.model_name} on port {s.cfg.port} "
            f"({'cores' if cfg.device == 'cpu' else 'GPUs'} {devices[i]}; log: {s.log_path})",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    model_to_load(cfg)  # build the stand-in once, not in each replica's thread
    failed = start_all(servers)
    if failed or stopping.is_set():
        stop_all(servers)
        if stopping.is_set():
            return 130
        i, why = failed[0]
        first = str(why).splitlines()[0]
        print(
            f"error: replica {i} (port {servers[i].cfg.port}) did not become healthy: "
            f"{first}; see its log {servers[i].log_path}",
            file=sys.stderr,
        )
        return 1
    print(f"starting vllm-router ({cfg.router.policy}; log: {router.log_path})", file=sys.stderr)
    try:
        router.start()
    except LaunchError as exc:
        stop_all(servers)
        if stopping.is_set():
            return 130
        first = str(exc).splitlines()[0]
        print(f"error: {first}; see its log {router.log_path}", file=sys.stderr)
        return 1
    print(f"starting the edge: nginx on port {cfg.port} (log: {edge.log_path})", file=sys.stderr)
    try:
        edge.start()
    except LaunchError as exc:
        router.stop()
        stop_all(servers)
        if stopping.is_set():
            return 130
        first = str(exc).splitlines()[0]
        print(f"error: {first}; see its log {edge.log_path}", file=sys.stderr)
        return 1
    ready.set()
    print(
        ready_banner(
            cfg,
            ready_s=time.perf_counter() - t0,
            root_url=edge.root_url,
            keyed=bool(client_key),
            image_mask=image_mask_active({**os.environ, **cfg.env}),
            audit=edge.audit_path,
        ),
        flush=True,
    )

    for i in range(len(servers)):
        fleet.watch(i)
    code, edge_restarts = 0, 0
    while not stopping.is_set():
        if hup.is_set():
            hup.clear()
            if fleet.rolling():
                say("SIGHUP: a rolling restart is in progress; ignored (send it again when done)")
            else:
                fleet.start_rollout(reload)
        edge_restarts, edge_code = keep_edge(edge, cfg.restart, edge_restarts)
        if edge_code is not None:
            code = edge_code
            break
        router_code = fleet.keep_router()
        if router_code is not None:
            code = router_code
            break
        if len(fleet.exits) == len(servers) and not fleet.rolling():
            print("error: every replica is down; stopping the router", file=sys.stderr)
            code = max(fleet.exits.values()) or 1
            break
        time.sleep(0.5)
    edge.stop()
    fleet.stop()
    return code
