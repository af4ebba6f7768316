"""What the image readiness probe adds to a server's start-up: alternating rounds of
A (ready at /health and /v1/models) and B (then one image + text request, the launcher's
default), each a fresh `ServerProcess` start of the same config, one server at a time.

    flock /tmp/server.lock python -m benchmarks.experiments.startup_probe \\
        --config configs/deployments/cpu-tiny.yaml --rounds 3

Prints every start (seconds to /health, seconds to ready, the probe's share, the load
average when it began), then the medians. After an A start it also times the first image
request (what a client would have waited for had it arrived at once). Server and client
share the machine's cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.runner.cli import module_main
from serve.command.argv import probes_images
from serve.config.deployment import ConfigError, load_config
from serve.launch.probe import probe
from serve.launch.server import ServerProcess
from serve.process import LaunchError, free_port


@dataclass(frozen=True)
class Start:
    """One start: arm A (health only) or B (health + probe)."""

    round: int
    arm: str
    health_s: float
    ready_s: float
    first_image_s: float | None  # A only: the first probe request after ready
    load_avg: float


def summarize(starts: list[Start]) -> dict[str, float]:
    """Medians per arm (pure): ready_s of A and B, B's probe share, A's first request."""
    a = [s for s in starts if s.arm == "A"]
    b = [s for s in starts if s.arm == "B"]
    out: dict[str, float] = {}
    if a:
        out["A_ready_median_s"] = statistics.median(s.ready_s for s in a)
        firsts = [s.first_image_s for s in a if s.first_image_s is not None]
        if firsts:
            out["A_first_request_median_s"] = statistics.median(firsts)
    if b:
        out["B_ready_median_s"] = statistics.median(s.ready_s for s in b)
        out["B_probe_median_s"] = statistics.median(s.ready_s - s.health_s for s in b)
    if a and b:
        out["B_minus_A_median_s"] = out["B_ready_median_s"] - out["A_ready_median_s"]
    return out


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def one_start(cfg_path: Path, port: int, arm: str, number: int, log_dir: Path) -> Start:
    cfg = load_config(cfg_path, [f"port={port}"])
    load = load_average()
    server = ServerProcess(cfg, log_dir / f"round{number}-{arm}.log", ready_probe=arm == "B")
    with server:
        assert server.health_s is not None and server.started_s is not None
        first = None
        if arm == "A":
            result = probe(
                server.base_url,
                cfg.model_name,
                with_image=probes_images(cfg.limit_mm_per_prompt),
                api_key=server.api_key,
                timeout_s=300,
                verify=server.verify,
            )
            if not result.ok:
                raise LaunchError(f"the first request after an A start failed: {result.detail}")
            first = result.seconds
        return Start(number, arm, server.health_s, server.started_s, first, load)


DESCRIPTION = __doc__.split("\n\n")[0]


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path("configs/deployments/cpu-tiny.yaml"))
    p.add_argument("--rounds", type=int, default=3, help="rounds of A then B (default 3)")
    p.add_argument("--port", type=int, help="server port (default: a free one)")
    p.add_argument("--log-dir", type=Path, help="server logs (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the starts and medians here")


def main(args: argparse.Namespace) -> int:
    if args.rounds < 1:
        print(f"error: --rounds: {args.rounds} is not a positive number", file=sys.stderr)
        return 2
    try:
        load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="startup-probe-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    command = shlex.join(["python", *args.command_line[1:]])
    print(f"command: {command}")
    print(
        f"date:    {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; cores: {os.cpu_count()}, "
        "server and client share them"
    )
    print(f"logs:    {log_dir}")
    print("round arm  health_s  ready_s  probe_s  first_image_s  load_avg")
    starts: list[Start] = []
    try:
        for number in range(1, args.rounds + 1):
            for arm in ("A", "B"):
                s = one_start(args.config, port, arm, number, log_dir)
                starts.append(s)
                first = f"{s.first_image_s:13.2f}" if s.first_image_s is not None else " " * 13
                print(
                    f"{s.round:5d} {s.arm:3s} {s.health_s:9.1f} {s.ready_s:8.1f} "
                    f"{s.ready_s - s.health_s:8.2f} {first}  {s.load_avg:8.2f}",
                    flush=True,
                )
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = summarize(starts)
    for key, value in summary.items():
        print(f"{key}: {value:.2f}")
    print(f"load average at the end: {Path('/proc/loadavg').read_text().strip()}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"command": command, "starts": [asdict(s) for s in starts], **summary}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(
        module_main("benchmarks.experiments.startup_probe", add_cli_args, main, DESCRIPTION)
    )
