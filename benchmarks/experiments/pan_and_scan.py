"""What Gemma 3's pan-and-scan costs in prompt tokens: the server's `usage.prompt_tokens`
for the same one-image chat with and without `mm_processor_kwargs: {do_pan_and_scan: true}`
(sent per request; vLLM 0.32 refuses that with 400 unless the server runs with
`--trust-request-mm-kwargs`, which this experiment adds to the server it starts; a config's
`mm_processor_kwargs` sets it for every request), over images of growing aspect ratio.

    flock /tmp/server.lock python -m benchmarks.experiments.pan_and_scan \\
        --config configs/deployments/cpu-tiny.yaml [--set 'mm_processor_kwargs={...}']

Starts the config's server (one image + text request proves it ready), or uses a running
one with --base-url. Prints one row per image size and setting (the "none sent" rows show
the server's own setting), with the crops the processor's rule predicts (`crops`, pure,
the rule of vLLM's Gemma3 processor).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import math
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from benchmarks.runner.cli import module_main
from serve.config.deployment import ConfigError, load_config
from serve.launch.server import ServerProcess
from serve.process import LaunchError, free_port

SIZES = [(896, 896), (1344, 896), (1792, 896), (2688, 896), (3584, 896), (896, 1792)]
SETTINGS: dict[str, dict[str, Any] | None] = {
    "none sent": None,  # the server's own setting (its config's mm_processor_kwargs)
    "pan-and-scan": {"do_pan_and_scan": True},
    "pan-and-scan, max 2": {"do_pan_and_scan": True, "pan_and_scan_max_num_crops": 2},
}


def crops(
    width: int,
    height: int,
    min_crop_size: int = 256,
    max_num_crops: int = 4,
    min_ratio_to_activate: float = 1.2,
) -> int:
    """Extra crops pan-and-scan adds to one image (0: the image alone), as Gemma 3's
    processor decides (transformers' Gemma3ImageProcessor.pan_and_scan; pure)."""
    long, short = max(width, height), min(width, height)
    if long / short < min_ratio_to_activate:
        return 0
    n = min(math.floor(long / min_crop_size), math.floor(long / short + 0.5))
    n = min(max_num_crops, max(2, n))
    if min(math.ceil(long / n), short) < min_crop_size:
        return 0
    return n


def image_url(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def prompt_tokens(
    base_url: str, model: str, url: str, kwargs: dict[str, Any] | None, api_key: str | None
) -> int:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "Describe this X-ray"},
                ],
            }
        ],
        "max_tokens": 1,
        "temperature": 0,
    }
    if kwargs is not None:
        body["mm_processor_kwargs"] = kwargs
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    r = httpx.post(f"{base_url}/chat/completions", json=body, headers=headers, timeout=300)
    if r.status_code != 200:
        raise LaunchError(f"HTTP {r.status_code}: {r.text[:300]}")
    return int(r.json()["usage"]["prompt_tokens"])


def table(
    base_url: str, model: str, api_key: str | None, cfg_kwargs: dict[str, Any] | None
) -> list[str]:
    rows = ["image        sent                 crops  prompt_tokens  vs none sent"]
    for width, height in SIZES:
        url = image_url(width, height)
        off = None
        for name, kwargs in SETTINGS.items():
            n = prompt_tokens(base_url, model, url, kwargs, api_key)
            off = n if off is None else off
            k = kwargs or {}
            k = {**(cfg_kwargs or {}), **k}
            predicted = (
                crops(width, height, max_num_crops=k.get("pan_and_scan_max_num_crops", 4))
                if k.get("do_pan_and_scan")
                else 0
            )
            size = f"{width}x{height}"
            rows.append(f"{size:12s} {name:19s} {predicted:6d} {n:14d} {n - off:+13d}")
    return rows


DESCRIPTION = __doc__.split("\n\n")[0]


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path("configs/deployments/cpu-tiny.yaml"))
    p.add_argument("--base-url", help="a running server's /v1 URL (default: start the config's)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )


def main(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = shlex.join(["python", *args.command_line[1:]])
    print(f"command: {command}")
    print(f"date:    {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; model {cfg.model_name}")
    try:
        if args.base_url:
            server = ServerProcess(cfg, Path("unused"))
            rows = table(
                args.base_url.rstrip("/"), cfg.model_name, server.api_key, cfg.mm_processor_kwargs
            )
        else:
            trust = "extra_args.trust_request_mm_kwargs=true"
            cfg = load_config(args.config, [*args.set, f"port={free_port()}", trust])
            log = Path(tempfile.mkdtemp(prefix="pan-and-scan-")) / "serve.log"
            with ServerProcess(cfg, log) as server:
                rows = table(
                    server.base_url, cfg.model_name, server.api_key, cfg.mm_processor_kwargs
                )
    except (LaunchError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(
        module_main("benchmarks.experiments.pan_and_scan", add_cli_args, main, DESCRIPTION)
    )
