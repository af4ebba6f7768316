"""A volume's follow-up question with vLLM's processed-image cache off, `lru` (vLLM's default
type) and `shm` (what the project runs, serve.command.argv.MM_CACHE_TYPE); and whether a
request rejected after its slices were processed breaks the next one.

    flock /tmp/server.lock python -m benchmarks.experiments.volume_cache \\
        --config configs/deployments/cpu-volumes.yaml [--rounds 2] [--slices 85]

Each variant is a fresh server of the config (one at a time, on a free port; the config's
`mm_processor_cache_gb` unless it is 0, then 4), in alternating rounds (off lru shm off lru
shm). Each round draws new slices (512 x 512 RGB JPEG data URLs, each followed by "SLICE n"),
asks a first question, then a follow-up (same slices, another question; max_tokens 16,
temperature 0), then sends new slices with max_tokens -5 (rejected) and the same slices
corrected: `after reject` is the corrected request's status (lru: 500, vLLM's "cache
drift"). Prints every round, then the medians per variant, and the load average.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from benchmarks.runner.cli import module_main
from serve.config.deployment import ConfigError, DeploymentConfig, load_config
from serve.launch.server import ServerProcess
from serve.process import LaunchError, free_port

FIRST = "These are consecutive axial slices of one CT volume. List each finding."
FOLLOW_UP = "Is there a pulmonary embolism? Answer yes or no, then name the slices."
VARIANTS: dict[str, dict[str, Any]] = {
    "off": {"mm_processor_cache_gb": 0},
    "lru": {"extra_args.mm_processor_cache_type": "lru"},  # after argv's `shm`: it wins
    "shm": {},
}


def slice_url(rng: np.random.Generator, side: int = 512) -> str:
    """A smooth random RGB slice (JPEG, ~50 KB): distinct per draw, CT-like in size."""
    coarse = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def volume(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [slice_url(rng) for _ in range(n)]


def body(model: str, slices: list[str], question: str, max_tokens: int = 16) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for i, url in enumerate(slices, 1):
        parts += [{"type": "image_url", "image_url": {"url": url}}]
        parts += [{"type": "text", "text": f"SLICE {i}"}]
    parts.append({"type": "text", "text": question})
    return {
        "model": model,
        "messages": [{"role": "user", "content": parts}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


def timed(http: httpx.Client, doc: dict[str, Any]) -> tuple[int, float]:
    t0 = time.perf_counter()
    r = http.post("/chat/completions", json=doc)
    return r.status_code, time.perf_counter() - t0


def one_round(server: ServerProcess, model: str, seed: int, n: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=1800) as http:
        slices = volume(seed, n)
        s1, first = timed(http, body(model, slices, FIRST))
        s2, follow = timed(http, body(model, slices, FOLLOW_UP))
        other = volume(seed + 10_000, n)
        rejected, _ = timed(http, body(model, other, FIRST, max_tokens=-5))
        after, after_s = timed(http, body(model, other, FIRST))
    return {
        "first_s": first,
        "follow_up_s": follow,
        "status": f"{s1}/{s2}",
        "rejected": rejected,
        "after_reject": after,
        "after_reject_s": after_s,
    }


def variant_config(args: argparse.Namespace, name: str) -> DeploymentConfig:
    base = load_config(args.config, args.set)
    gib = base.mm_processor_cache_gb or 4
    overrides = [f"port={free_port()}", f"mm_processor_cache_gb={gib:g}"]
    overrides += [f"{k}={v}" for k, v in VARIANTS[name].items()]
    return load_config(args.config, [*args.set, *overrides])


def run(args: argparse.Namespace) -> list[tuple[int, str, dict[str, Any]]]:
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="volume-cache-"))
    for rnd in range(1, args.rounds + 1):
        for name in VARIANTS:
            cfg = variant_config(args, name)
            log = folder / f"{name}-{rnd}.log"
            with ServerProcess(cfg, log) as server:
                row = one_round(server, cfg.model_name, 1000 * rnd, args.slices)
            row["ready_s"] = server.started_s
            rows.append((rnd, name, row))
            print(f"round {rnd} {name:3s}  " + fmt(row) + f"  (log {log})", flush=True)
    return rows


def fmt(row: dict[str, Any]) -> str:
    ratio = row["follow_up_s"] / row["first_s"]
    return (
        f"first {row['first_s']:6.2f} s  follow-up {row['follow_up_s']:5.2f} s ({ratio:.2f}x)"
        f"  [{row['status']}]  rejected {row['rejected']}, then the same slices: "
        f"{row['after_reject']} in {row['after_reject_s']:.2f} s"
    )


DESCRIPTION = __doc__.split("\n\n")[0]


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path("configs/deployments/cpu-volumes.yaml"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--slices", type=int, default=85)
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )


def main(args: argparse.Namespace) -> int:
    try:
        load_config(args.config, args.set)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"command: {shlex.join(['python', *args.command_line[1:]])}")
    print(f"date:    {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; load {os.getloadavg()}")
    try:
        rows = run(args)
    except (LaunchError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name in VARIANTS:
        mine = [r for _, n, r in rows if n == name]
        first = statistics.median(r["first_s"] for r in mine)
        follow = statistics.median(r["follow_up_s"] for r in mine)
        after = sorted({r["after_reject"] for r in mine})
        print(
            f"median {name:3s}  first {first:.2f} s  follow-up {follow:.2f} s  after reject {after}"
        )
    print(f"load at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(
        module_main("benchmarks.experiments.volume_cache", add_cli_args, main, DESCRIPTION)
    )
