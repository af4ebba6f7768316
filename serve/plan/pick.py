"""`python -m serve pick-config`: the deployment config that fits the GPU this host has.

`make serve` on a GPU host serves what this prints (the Makefile's CONFIG default with
DEVICE=cuda). The default model is MedGemma 1.5 4B, the current one; each of its one-GPU
configs was sized by `python -m serve plan` for one catalogue GPU (`gpu_type`,
serve/plan/gpus.yaml), and none has run on a GPU where it was written.

The rule (`pick`, pure), on GPU 0 (the one a one-GPU vLLM server uses):
- its name says H200 and it has the H200's memory (95% of it, `MEMORY_SLACK`): the H200 config;
- its name says H100 and it has the H100's memory: the H100 config;
- any other GPU: the L4 config (24 GB), the smallest sizing, which any larger GPU holds
  (vLLM's KV cache takes the same share of the larger memory). The name, not only the
  memory, decides the larger sizings, because their batch was sized for H100/H200
  bandwidth: an A100 80 GB has the H100's memory and 61% of its bandwidth, so the H100's
  256 streams would each decode slower than planned there;
- no GPU: the CPU stand-in.
The path goes to stdout (for the Makefile), the reason to stderr.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass

from serve.plan.inputs import Gpu, load_gpus, min_gpu_memory_mib

DEPLOYMENTS = "configs/deployments"
CPU_CONFIG = f"{DEPLOYMENTS}/cpu-tiny.yaml"
# The default model's one-GPU configs, largest sizing first: (name pattern, gpu_type, config).
# None: any GPU (the fallback).
SIZED: tuple[tuple[str | None, str, str], ...] = (
    (r"\bH200\b", "h200-141gb", f"{DEPLOYMENTS}/medgemma-1.5-4b-it-h200.yaml"),
    (r"\bH100\b", "h100-80gb", f"{DEPLOYMENTS}/medgemma-1.5-4b-it-h100.yaml"),
    (None, "l4-24gb", f"{DEPLOYMENTS}/medgemma-1.5-4b-it.yaml"),
)
NVIDIA_SMI = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]


@dataclass(frozen=True)
class SeenGpu:
    """One line of `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader`."""

    name: str
    memory_mib: int


@dataclass(frozen=True)
class Pick:
    """The config to serve and why, in one line."""

    config: str
    reason: str


def parse_nvidia_smi(text: str) -> list[SeenGpu]:
    """nvidia-smi's CSV lines ("NVIDIA L4, 23034 MiB") -> the GPUs, in device order (pure).
    Raises ValueError naming a line it cannot read."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*(.+?)\s*,\s*(\d+)\s*MiB\s*", line)
        if m is None:
            raise ValueError(f"cannot read nvidia-smi's line {line.strip()!r} (want 'NAME, N MiB')")
        gpus.append(SeenGpu(m.group(1), int(m.group(2))))
    return gpus


def pick(gpus: list[SeenGpu], catalogue: dict[str, Gpu]) -> Pick:
    """The config for these GPUs (GPU 0 decides) and why (pure)."""
    if not gpus:
        return Pick(CPU_CONFIG, "no NVIDIA GPU found: the random-weight stand-in on the CPU")
    gpu = gpus[0]
    seen = f"{gpu.name}, {gpu.memory_mib} MiB"
    more = (
        f"; {len(gpus)} GPUs found, a one-GPU config uses GPU 0 (for all of them see "
        "docs/deploying.md, several GPUs)"
        if len(gpus) > 1
        else ""
    )
    for pattern, gpu_type, config in SIZED:
        sized = catalogue[gpu_type]
        least = min_gpu_memory_mib(sized)
        if pattern is not None:
            if re.search(pattern, gpu.name, re.IGNORECASE) and gpu.memory_mib >= least:
                why = f"sized by the planner for {sized.description}, {sized.memory_mib} MiB"
                return Pick(config, f"{seen}: {why}{more}")
            continue
        if gpu.memory_mib >= least:
            why = (
                f"not an H100 or H200, and at least the {least} MiB of the {gpu_type} sizing "
                f"(the smallest; its batch of 32 was planned for {sized.memory_mib} MiB, so a "
                "larger GPU holds it with more KV cache)"
            )
        else:
            why = (
                f"WARNING: under the {least} MiB of the smallest sizing ({gpu_type}); vLLM "
                "will likely not start it: lower max_model_len or gpu_memory_utilization "
                "(python -m serve plan --gpu), or serve on the CPU (make serve DEVICE=cpu)"
            )
        return Pick(config, f"{seen}: {why}{more}")
    raise AssertionError("SIZED ends with a fallback")  # pragma: no cover


def query_gpus() -> list[SeenGpu]:
    """The GPUs nvidia-smi reports; none if it is missing or fails."""
    try:
        r = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(r.stdout) if r.returncode == 0 else []


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serve pick-config",
        description="Print the deployment config that fits this host's GPU (what `make serve` "
        "serves with DEVICE=cuda); the reason goes to stderr.",
    )
    p.add_argument(
        "--nvidia-smi",
        metavar="TEXT",
        help="nvidia-smi's output to decide on instead of asking nvidia-smi "
        "(lines like 'NVIDIA H100 80GB HBM3, 81559 MiB'; '' for no GPU)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        gpus = query_gpus() if args.nvidia_smi is None else parse_nvidia_smi(args.nvidia_smi)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    choice = pick(gpus, load_gpus())
    print(f"pick-config: {choice.config}: {choice.reason}", file=sys.stderr)
    print(choice.config)
    return 0
