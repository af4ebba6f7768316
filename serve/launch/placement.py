"""Where a replicas config runs on this machine, checked before anything starts.

Each replica's cores (the CPUs this process may run on) or GPUs (`nvidia-smi -L`), split
by serve.command.replicas' pure placement; the ports of the deployment that something
already listens on; and `--dry-run`'s view of it all: every replica's command and the
router's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from serve.command.argv import local_server_env, render_shell, server_command
from serve.command.replicas import (
    PlacementError,
    cpu_placement,
    gpu_placement,
    ports,
    replica_configs,
    replica_url,
    router_argv,
    router_command,
)
from serve.config.deployment import DeploymentConfig
from serve.process import port_in_use


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


def named_ports(cfg: DeploymentConfig) -> list[tuple[str, str, str, int]]:
    """Every port of a replicas deployment: (config field, whose, host, port) (pure)."""
    p = ports(cfg)
    named = [("port", "the edge (nginx)", cfg.host, p.edge)]
    named += [
        ("replicas.first_port", f"replica {i}", "127.0.0.1", n) for i, n in enumerate(p.replicas)
    ]
    named.append(("router.metrics_port", "the router's metrics", cfg.host, p.metrics))
    named.append(("router.metrics_port", "the router (metrics port + 1)", "127.0.0.1", p.router))
    named.append(
        ("router.metrics_port", "the edge's key check (metrics port + 2)", "127.0.0.1", p.authz)
    )
    return named


def busy_ports(cfg: DeploymentConfig) -> list[str]:
    """A line for each port of the deployment that something already listens on."""
    return [
        f"{field}: port {n} ({who}) is already in use; stop what listens there or choose "
        "another (--port N moves them all)"
        for field, who, host, n in named_ports(cfg)
        if port_in_use(host, n)
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
        lines.append(
            render_shell(server_command(rep, model_path), local_server_env(rep, os.environ))
        )
    lines.append("# router")
    argv = router_argv(cfg, [replica_url(r) for r in replicas])
    lines.append(render_shell(router_command(argv), {}))
    p = ports(cfg)
    lines.append(
        f"# edge: nginx on {cfg.host}:{p.edge} with the configuration serve.edge.nginx renders "
        "at launch (it holds the replicas' internal key, made per launch); its key check:"
    )
    authz = [sys.executable, "-m", "serve.edge.authz", "--port", str(p.authz)]
    if cfg.auth.keys_file is not None:
        authz += ["--keys-file", str(cfg.auth.keys_file)]
    lines.append(render_shell(authz, {}))
    return "\n".join(lines)
