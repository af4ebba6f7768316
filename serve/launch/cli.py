"""`python -m serve [serve]`: start the vLLM OpenAI server for a deployment config.

python -m serve --config configs/deployments/cpu-tiny.yaml [--port N] [--set k=v] [--dry-run]
    [--monitor [--monitor-port 9090]]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from serve.config.deployment import ConfigError, DeploymentConfig, load_config
from serve.config.model_source import unpinned_warning
from serve.config.yaml_file import describe_fields, source_name

DEFAULT_LOG_DIR = Path("logs")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serve [serve]",
        description="Serve a MedGemma(-architecture) model with vLLM's OpenAI-compatible server.",
        epilog="Other commands: `python -m serve --help`.",
    )
    p.add_argument("--config", type=Path, help="deployment YAML (configs/deployments/*.yaml)")
    p.add_argument("--port", type=int, help="override the config's port")
    p.add_argument("--host", help="override the config's host")
    p.add_argument("--model", help="override the model: hub id or local folder")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field (repeatable; dotted keys, YAML values): "
        "--set max_num_seqs=64 --set 'limit_mm_per_prompt={image: 2}'",
    )
    p.add_argument(
        "--log-file",
        type=Path,
        help="server log (default logs/serve-PORT.log); with `replicas:` its folder holds "
        "serve-PORT-replicaI.log and router-PORT.log",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the command and environment, start nothing"
    )
    p.add_argument(
        "--monitor",
        action="store_true",
        help="also run Prometheus (Debian's `prometheus`), scraping every server and evaluating "
        "the deployment's alerts; it stops with the server",
    )
    p.add_argument(
        "--monitor-port",
        type=int,
        default=None,
        metavar="N",
        help="with --monitor: Prometheus' port on 127.0.0.1 (default 9090)",
    )
    p.add_argument("--help-config", action="store_true", help="list every config field and exit")
    return p


def deployment_ports(cfg: DeploymentConfig) -> set[int]:
    """Every port the deployment listens on: the server's, or the edge's, the replicas',
    the router's, its metrics port and the key check's."""
    if cfg.replicas is None:
        return {cfg.port}
    from serve.command.replicas import ports

    p = ports(cfg)
    return {p.edge, p.router, p.authz, p.metrics, *p.replicas}


@contextlib.contextmanager
def monitoring(cfg: DeploymentConfig, port: int | None) -> Iterator[None]:
    """Run Prometheus for `cfg` on `port` while the body runs (nothing if `port` is None).
    Started first: a missing binary or a busy port fails before vLLM's long start.
    Raises MonitorError."""
    if port is None:
        yield
        return
    from serve.monitor.prometheus import for_deployment

    prometheus = for_deployment(cfg, port)
    print(f"starting Prometheus on {prometheus.url} (data: {prometheus.folder})", file=sys.stderr)
    with prometheus:
        print(
            f"monitor:  Prometheus on {prometheus.url} scrapes every server and evaluates "
            f"the alerts of `python -m serve render alerts` (log: {prometheus.log_path})",
            file=sys.stderr,
            flush=True,
        )
        yield


def config_from_args(args: argparse.Namespace) -> DeploymentConfig:
    overrides: list[str] = list(args.set)
    for name in ("port", "host", "model"):
        value = getattr(args, name)
        if value is not None:
            overrides.append(f"{name}={value}")
    return load_config(args.config, overrides)


def checked_config(args: argparse.Namespace) -> DeploymentConfig:
    """The config of the command line, after the pre-flight of the files it names and of
    its port (open to other machines only with a key). Raises ConfigError."""
    from serve.launch.preflight import preflight

    cfg = config_from_args(args)
    preflight(cfg, source_name(args.config), os.environ)
    return cfg


def dry_run(cfg: DeploymentConfig) -> str:
    """The exact command and environment, without building or starting anything: a
    stand-in and its adapters are named by the folders they are or will be built in."""
    from serve.command.argv import local_server_env, render_shell, server_command

    model_path = cfg.model
    if cfg.stand_in is not None:
        from serve.paths import standin_dir

        model_path = str(standin_dir(cfg.stand_in.preset, cfg.stand_in.seed))
    if cfg.replicas is not None:
        from serve.launch import placement

        return placement.dry_run(cfg, str(model_path))
    env = local_server_env(cfg, os.environ)
    return render_shell(server_command(cfg, model_path), env)


def run(cfg: DeploymentConfig, log_file: Path) -> int:
    """Start, report readiness, then wait; SIGINT/SIGTERM stop the server gracefully."""
    from serve.launch.server import ServerProcess
    from serve.process import LaunchError

    server = ServerProcess(cfg, log_file)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print(f"\nstopping the server ({signal.Signals(signum).name})...", file=sys.stderr)
        server.stop()

    def on_hup(_signum: int, _frame: object) -> None:
        # SIGHUP's default would end the launcher and leave vLLM (its own session) running.
        print(
            "SIGHUP ignored: one server cannot restart without downtime; a config with "
            "`replicas:` restarts them one at a time on SIGHUP (docs/operations.md). "
            "Stop and start to apply a config change.",
            file=sys.stderr,
            flush=True,
        )

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    print(f"starting vLLM for {cfg.model_name} (log: {log_file})", file=sys.stderr)
    try:
        server.start()
    except LaunchError as exc:
        if stopping:
            return 130
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from serve.attention.support import image_mask_active
    from serve.launch.banner import ready_banner

    ready_s = server.started_s or 0.0
    keyed = bool(server.environ.get(cfg.api_key_env))
    mask = image_mask_active({**os.environ, **cfg.env})
    banner = ready_banner(
        cfg,
        ready_s=ready_s,
        root_url=server.root_url,
        keyed=keyed,
        image_mask=mask,
        audit=server.audit_path,
    )
    print(banner, flush=True)
    from serve.launch.supervise import supervise

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    code, _restarts = supervise(server, lambda: stopping, report)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.help_config:
        print(describe_fields(DeploymentConfig))
        return 0
    if args.config is None and args.model is None:
        print("error: give --config configs/deployments/X.yaml (or --model)", file=sys.stderr)
        return 2
    try:
        cfg = checked_config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cfg.nodes > 1:
        print(
            f"error: nodes: {cfg.nodes} nodes cannot be started by `python -m serve` on one "
            "machine; render the config for a cluster: `python -m serve render ray|k8s "
            f"--config {args.config}`",
            file=sys.stderr,
        )
        return 2
    monitor_port = args.monitor_port
    if monitor_port is not None and not args.monitor:
        print("error: --monitor-port needs --monitor", file=sys.stderr)
        return 2
    if args.monitor:
        from serve.monitor.prometheus import DEFAULT_PORT

        monitor_port = DEFAULT_PORT if monitor_port is None else monitor_port
        if not 1 <= monitor_port <= 65535:
            print(f"error: --monitor-port: {monitor_port} is not a TCP port", file=sys.stderr)
            return 2
        if monitor_port in deployment_ports(cfg):
            print(
                f"error: --monitor-port {monitor_port} is a port of the deployment itself; "
                "choose another",
                file=sys.stderr,
            )
            return 2
    if warning := unpinned_warning(cfg.model, cfg.revision):
        print(warning, file=sys.stderr)
    if args.dry_run:
        print(dry_run(cfg))
        return 0
    from serve.monitor.prometheus import MonitorError

    try:
        with monitoring(cfg, monitor_port):
            if cfg.replicas is not None:
                from serve.launch import serve_replicas

                log_dir = args.log_file.parent if args.log_file else DEFAULT_LOG_DIR
                return serve_replicas.run(cfg, log_dir, reload=lambda: checked_config(args))
            log_file = args.log_file or DEFAULT_LOG_DIR / f"serve-{cfg.port}.log"
            return run(cfg, log_file)
    except MonitorError as exc:
        print(f"error: --monitor: {exc}", file=sys.stderr)
        return 2
