"""Run a replicas config: every replica, then vllm-router in front of them; stop them all.

`run` checks every port and the placement before starting anything, starts the replicas
side by side (each a ServerProcess with its own log), starts the router once all are
ready, supervises each replica with the config's restart policy (a restart of one leaves
the others and the router running; the router's health checks take it out and back in),
and on SIGTERM/SIGINT stops the router first, then lets the replicas drain.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from serve.config.deployment import DeploymentConfig
from serve.launch.argv import render_shell, server_command, to_server_env
from serve.launch.process import (
    LaunchError,
    ServerProcess,
    client_host,
    model_to_load,
    port_in_use,
    wait_until_ready,
)
from serve.launch.replicas import (
    PlacementError,
    cpu_placement,
    gpu_placement,
    ports,
    replica_configs,
    replica_url,
    router_argv,
    router_command,
)
from serve.launch.supervise import supervise


def gpu_count() -> int:
    """GPUs `nvidia-smi -L` lists (0 without the NVIDIA driver)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def placement(cfg: DeploymentConfig) -> list[str]:
    """Each replica's cores or GPUs on this machine. Raises PlacementError."""
    if cfg.device == "cpu":
        return cpu_placement(cfg, os.sched_getaffinity(0))
    return gpu_placement(cfg, gpu_count())


def busy_ports(cfg: DeploymentConfig) -> list[str]:
    """A line for each port of the deployment that something already listens on."""
    p = ports(cfg)
    named = [("port", "the router", p.router)]
    named += [("replicas.first_port", f"replica {i}", n) for i, n in enumerate(p.replicas)]
    named.append(("router.metrics_port", "the router's metrics", p.metrics))
    host = {"port": cfg.host, "router.metrics_port": cfg.host}
    return [
        f"{field}: port {n} ({who}) is already in use; stop what listens there or choose "
        "another (--port N moves them all)"
        for field, who, n in named
        if port_in_use(host.get(field, "127.0.0.1"), n)
    ]


def dry_run(cfg: DeploymentConfig, model_path: str) -> str:
    """Every replica's command and the router's, one shell line each."""
    lines = []
    try:
        replicas = replica_configs(cfg, placement(cfg))
    except PlacementError as exc:
        lines.append(f"# warning: {exc}; showing the placement from the config alone")
        n = cfg.replicas.count if cfg.replicas else 0
        replicas = replica_configs(cfg, [str(i) for i in range(n)])
    for i, rep in enumerate(replicas):
        lines.append(f"# replica {i}")
        lines.append(render_shell(server_command(rep, model_path), to_server_env(rep, os.environ)))
    lines.append("# router")
    argv = router_argv(cfg, [replica_url(r) for r in replicas])
    lines.append(render_shell(router_command(argv), {}))
    return "\n".join(lines)


class Router:
    """vllm-router as a child process in its own process group, logging to a file."""

    def __init__(self, cfg: DeploymentConfig, urls: list[str], log_path: Path) -> None:
        self.cfg, self.urls, self.log_path = cfg, urls, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def root_url(self) -> str:
        return f"http://{client_host(self.cfg.host)}:{self.cfg.port}"

    def start(self, api_key: str | None) -> None:
        """Start the router; wait until it answers /health and /v1/models (the latter
        forwarded to a replica, with the key). Raises LaunchError."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                router_command(router_argv(self.cfg, self.urls)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_until_ready(
                self.proc,
                [f"{self.root_url}/health", f"{self.root_url}/v1/models"],
                timeout_s=90,
                log_path=self.log_path,
                name="vllm-router",
                headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
                interval_s=0.5,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def start_all(servers: list[ServerProcess]) -> list[tuple[int, LaunchError]]:
    """Start every replica side by side; the failures, by replica index."""

    def start(i: int) -> tuple[int, LaunchError] | None:
        try:
            servers[i].start()
        except LaunchError as exc:
            return i, exc
        return None

    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        results = list(pool.map(start, range(len(servers))))
    return [r for r in results if r is not None]


def stop_all(servers: list[ServerProcess]) -> None:
    """Stop the replicas side by side (each drains for up to drain_timeout_s)."""
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        list(pool.map(lambda s: s.stop(), servers))


def run(cfg: DeploymentConfig, log_dir: Path) -> int:
    """Start replicas and router, print the ready lines, supervise, stop on a signal."""
    try:
        devices = placement(cfg)
    except PlacementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    busy = busy_ports(cfg)
    if busy:
        print(f"error: {busy[0]}", file=sys.stderr)
        return 1
    replicas = replica_configs(cfg, devices)
    p = ports(cfg)
    servers = [
        ServerProcess(rep, log_dir / f"serve-{cfg.port}-replica{i}.log")
        for i, rep in enumerate(replicas)
    ]
    router = Router(cfg, [replica_url(r) for r in replicas], log_dir / f"router-{cfg.port}.log")
    stopping, ready = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        print(f"\nstopping ({signal.Signals(signum).name})...", file=sys.stderr, flush=True)
        if not ready.is_set():  # still starting: end the start-up waits now
            for proc in [s.proc for s in servers] + [router.proc]:
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
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
        router.start(servers[0].api_key)
    except LaunchError as exc:
        stop_all(servers)
        if stopping.is_set():
            return 130
        first = str(exc).splitlines()[0]
        print(f"error: {first}; see its log {router.log_path}", file=sys.stderr)
        return 1
    ready.set()
    print(f"ready in {time.perf_counter() - t0:.0f} s")
    print(f"base URL: {router.root_url}/v1")
    print(f"model:    {cfg.model_name}")
    print(f"replicas: {len(servers)} on ports {', '.join(str(n) for n in p.replicas)}")
    print(f"router:   vllm-router, policy {cfg.router.policy}, metrics on port {p.metrics}")
    if cfg.stand_in is not None:
        from serve.standin.tiny_model import RANDOM_WEIGHTS_NOTICE

        print(f"note:     {RANDOM_WEIGHTS_NOTICE}")
    if servers[0].api_key:
        print(f"auth:     API key required (from ${cfg.api_key_env})")
    sys.stdout.flush()

    results: dict[int, int] = {}

    def watch(i: int) -> None:
        def report(line: str) -> None:
            print(f"replica {i}: {line}", file=sys.stderr, flush=True)

        code, _ = supervise(servers[i], stopping.is_set, report)
        results[i] = code

    watchers = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(len(servers))]
    for w in watchers:
        w.start()
    code = 0
    while not stopping.is_set():
        if router.proc is not None and router.proc.poll() is not None:
            print(
                f"error: vllm-router exited with status {router.proc.returncode}; "
                f"see {router.log_path}",
                file=sys.stderr,
            )
            code = 1
            break
        if len(results) == len(servers):
            print("error: every replica is down; stopping the router", file=sys.stderr)
            code = max(results.values()) or 1
            break
        time.sleep(0.5)
    stopping.set()
    router.stop()
    stop_all(servers)
    for w in watchers:
        w.join(timeout=5)
    return code
