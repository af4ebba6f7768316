"""What the client costs: image preparation time, and served throughput at full resolution
versus downscaled on the client (a benchmark that prints numbers, not a test).

    python -m benchmarks client-cost                      # starts a cpu-tiny server
    python -m benchmarks client-cost --base-url http://127.0.0.1:8000/v1

Part 1 times `clients.image_input.to_data_url` on files (read + decode + downscale + encode +
base64), median of --reps runs: radiograph-like PNGs of 512, 2048 and 4096 px and a
2048 px 12-bit DICOM, each at max_size=896 and at full resolution (max_size=None).
Part 2 sends the same --requests distinct 2048 px images at the same concurrency, four
variants interleaved per round: full resolution vs downscaled to 896 px by the client,
each with the preparation inside the timed loop (what a client on this machine sees) and
pre-encoded before timing (what the server alone costs). Every pass sends new pixels (the
base images shifted), so no cache serves a repeat. It prints req/s and the ratios.
Client and server share this machine's CPU cores: say so next to every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openai
from PIL import Image

from benchmarks.runner.workload import dicom_dataset, xray_values
from clients.chat import MedGemmaClient
from clients.image_input import to_data_url
from clients.messages import RADIOLOGIST, build_messages

REPO = Path(__file__).resolve().parents[2]
PREP_SIZES = (512, 2048, 4096)


def write_inputs(folder: Path, seed: int) -> dict[str, Path]:
    """The files whose preparation is timed: PNGs per size and one DICOM."""
    rng = np.random.default_rng(seed)
    files = {}
    for size in PREP_SIZES:
        path = folder / f"xray-{size}.png"
        Image.fromarray(xray_values(rng, size, size, 255).astype(np.uint8)).save(path)
        files[f"PNG {size} px"] = path
    path = folder / "xray-2048.dcm"
    dicom_dataset(rng, 2048, 2048).save_as(path, enforce_file_format=True)
    files["DICOM 2048 px 12-bit"] = path
    return files


def time_prep(path: Path, max_size: int | None, reps: int) -> float:
    """Median milliseconds of to_data_url(path) over reps runs (after one warm-up)."""
    to_data_url(path, max_size=max_size)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        to_data_url(path, max_size=max_size)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


async def one_pass(
    client: MedGemmaClient,
    inputs: list[Path] | list[list[dict]],
    max_size: int | None,
    concurrency: int,
    max_tokens: int,
) -> tuple[float, int]:
    """Send every input once; (requests per second, failures). Paths are prepared inside
    the timed loop (a real client); ready message lists are only sent (server cost)."""
    sem = asyncio.Semaphore(concurrency)

    async def send(item: Path | list[dict]) -> bool:
        async with sem:
            if isinstance(item, Path):
                messages = await asyncio.to_thread(prepare, item, max_size)
            else:
                messages = item
            try:
                await client.acomplete(messages, max_tokens=max_tokens, temperature=0)
            except openai.APIError as exc:
                print(f"  request failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                return False
            return True

    t0 = time.perf_counter()
    ok = await asyncio.gather(*(send(p) for p in inputs))
    elapsed = time.perf_counter() - t0
    return len(inputs) / elapsed, ok.count(False)


def prepare(path: Path, max_size: int | None) -> list[dict]:
    return build_messages("Describe this X-ray", [path], system=RADIOLOGIST, max_size=max_size)


def fresh_images(bases: list[np.ndarray], folder: Path, tag: str, shift: int) -> list[Path]:
    """The base images shifted by `shift` px and saved: new content for every pass, so
    neither vLLM's multimodal cache nor its prefix cache serves a repeat."""
    paths = []
    for i, base in enumerate(bases):
        p = folder / f"served-{tag}-{i}.png"
        Image.fromarray(np.roll(base, shift, axis=1)).save(p, compress_level=1)
        paths.append(p)
    return paths


async def served(args: argparse.Namespace, base_url: str, api_key: str, folder: Path) -> None:
    rng = np.random.default_rng(args.seed + 1)
    size = args.image_size
    bases = [xray_values(rng, size, size, 255).astype(np.uint8) for _ in range(args.requests)]
    labels = [
        ("full res, prep in loop", None, False),
        ("896 px, prep in loop", 896, False),
        ("full res, pre-encoded", None, True),
        ("896 px, pre-encoded", 896, True),
    ]
    rates: dict[str, list[float]] = {label: [] for label, _, _ in labels}
    client = MedGemmaClient(base_url=base_url, api_key=api_key, model=args.model, max_retries=0)
    async with client:
        await client.aresolve_model()  # before any timed pass; a dead server stops here
        warm = fresh_images(bases[:2], folder, "warm", size // 2)
        await one_pass(client, warm, 896, 2, args.max_tokens)
        for rnd in range(args.rounds):
            for k, (label, max_size, pre) in enumerate(labels):
                paths = fresh_images(bases, folder, "pass", 1 + rnd * len(labels) + k)
                inputs: list[Path] | list[list[dict]] = paths
                if pre:
                    inputs = [prepare(p, max_size) for p in paths]
                rate, failed = await one_pass(
                    client, inputs, max_size, args.concurrency, args.max_tokens
                )
                rates[label].append(rate)
                print(f"  round {rnd + 1} {label:<24} {rate:6.2f} req/s ({failed} failed)")
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"\nServed throughput, {args.requests} distinct {args.image_size} px PNGs, concurrency "
        f"{args.concurrency}, {args.max_tokens} output tokens, median of {args.rounds} rounds, "
        f"variants interleaved (client and server share the same {os.cpu_count()} CPU cores):"
    )
    for label, rate in med.items():
        print(f"  {label:<26} {rate:6.2f} req/s")
    for how in ("prep in loop", "pre-encoded"):
        ratio = med[f"896 px, {how}"] / med[f"full res, {how}"]
        print(f"  ratio 896 / full, {how:<13} {ratio:6.2f}x")


def prep_report(args: argparse.Namespace, folder: Path) -> None:
    files = write_inputs(folder, args.seed)
    print(
        f"Client preparation, ms per image (median of {args.reps}; read + decode + downscale + "
        f"encode + base64; {os.cpu_count()} CPU cores, shared with the server if it runs here):"
    )
    print(f"  {'input':<22} {'file KB':>8} {'-> 896 px':>10} {'full res':>10}")
    for name, path in files.items():
        down = time_prep(path, 896, args.reps)
        full = time_prep(path, None, args.reps)
        kb = path.stat().st_size / 1024
        print(f"  {name:<22} {kb:8.0f} {down:10.1f} {full:10.1f}")


DESCRIPTION = __doc__.split("\n")[0]


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", help="use this server instead of starting a cpu-tiny one")
    p.add_argument("--api-key", default=None, help="key of --base-url (default MEDGEMMA_API_KEY)")
    p.add_argument("--model", default=None, help="served model (default: the only one)")
    p.add_argument("--requests", type=int, default=24, help="distinct images per pass")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--rounds", type=int, default=2, help="interleaved full/896 pass pairs")
    p.add_argument("--image-size", type=int, default=2048, help="px of the served images")
    p.add_argument("--max-tokens", type=int, default=8, help="output tokens per request")
    p.add_argument("--reps", type=int, default=7, help="repetitions per preparation timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prep-only", action="store_true", help="skip the served part")


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="client-cost-") as tmp:
        folder = Path(tmp)
        prep_report(args, folder)
        if args.prep_only:
            return 0
        if args.base_url:
            key = args.api_key or os.environ.get("MEDGEMMA_API_KEY", "EMPTY")
            asyncio.run(served(args, args.base_url, key, folder))
            return 0
        from serve.config.deployment import load_config
        from serve.launch.server import ServerProcess
        from serve.process import LaunchError, free_port
        from serve.standin import tiny_model

        cfg = load_config(
            REPO / "configs" / "deployments" / "cpu-tiny.yaml",
            {"model": str(tiny_model.ensure("tiny", 0)), "port": free_port()},
        )
        key = "client-cost-bench"
        log = REPO / "logs" / f"client-cost-server-{cfg.port}.log"
        print(f"\nstarting a cpu-tiny vLLM server on port {cfg.port} (log {log}) ...")
        try:
            with ServerProcess(cfg, log, environ={**os.environ, cfg.api_key_env: key}) as proc:
                asyncio.run(served(args, proc.base_url, key, folder))
        except LaunchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0
