"""The host CPU's facts that change how the server should run on it.

Measured on these machines (2026-11-29): on a CPU without native bfloat16 arithmetic
(no `avx512_bf16` and no `amx_bf16` flag, e.g. an AVX2-only EPYC) a bf16 matrix product
ran far slower than the same product in float32 (one thread; the command that measured it
was not kept, so its figures are not repeated here: benchmarks.md's `ab` of dtype=bfloat16
against dtype=float32 measures the served difference), so a bf16 server there is slow for
no gain. `resolved_dtype` turns `dtype: auto` on
`device: cpu` into bfloat16 where the CPU has it and float32 where it does not.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

BF16_NATIVE = ("avx512_bf16", "amx_bf16")
# Found by `python -m serve verify` (docs/fidelity.md): vLLM 0.32's CPU attention backend
# ignores Gemma 3's bidirectional mask over an image's tokens. The project's plugin
# (serve/attention) adds it; where it is not active (a vLLM it was not written for, or an
# install without its entry point) the launcher says so.
IMAGE_ATTENTION_NOTICE = (
    "vLLM's CPU backend attends causally over image tokens where Gemma 3 attends both ways "
    "within an image, and the image-mask plugin (serve/attention) is not active for this "
    "vLLM: image answers differ from the reference (docs/fidelity.md)"
)


def image_attention_notice(
    device: str, limit_mm_per_prompt: dict[str, int], image_mask: bool
) -> str | None:
    """The notice to print for a deployment that sends images through the CPU backend
    without the image-mask plugin (`image_mask`: whether the plugin is active)."""
    images = device == "cpu" and limit_mm_per_prompt.get("image")
    return IMAGE_ATTENTION_NOTICE if images and not image_mask else None


# Instruction sets that change CPU inference speed by large factors, recorded with figures.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info(text: str) -> dict[str, Any]:
    """/proc/cpuinfo text -> the first CPU's model name and its flags (pure)."""
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(value.split())
    return {"cpu_model": model, "flags": flags}


def host_cpu() -> dict[str, Any]:
    """This machine's cpu_info (no flags where /proc/cpuinfo cannot be read)."""
    try:
        return cpu_info(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {"cpu_model": "", "flags": frozenset()}


def resolved_dtype(dtype: str, device: str, cpu_flags: Collection[str]) -> str:
    """The dtype the server runs: `auto` on the CPU is bfloat16 where the CPU multiplies
    bf16 natively, else float32; anything else is passed through to vLLM (pure)."""
    if dtype != "auto" or device != "cpu":
        return dtype
    return "bfloat16" if any(f in cpu_flags for f in BF16_NATIVE) else "float32"
