"""What machine a figure was measured on: CPU model, the instruction sets that decide
vLLM's CPU speed, and the load average (these machines are shared and noisy)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Instruction sets that change CPU inference speed by large factors: without avx512_bf16
# or amx_bf16, bfloat16 matrix products fall back to slow code (measured: 100x slower).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info(text: str) -> dict[str, Any]:
    """/proc/cpuinfo text -> model name and which of ISA_FLAGS the first CPU has (pure)."""
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"cpu_model": model, "isa": [f for f in ISA_FLAGS if f in flags]}


def machine_state() -> dict[str, Any]:
    """CPU model, ISA flags and load average now; recorded at each phase of a comparison."""
    try:
        info = cpu_info(Path("/proc/cpuinfo").read_text())
    except OSError:
        info = {"cpu_model": "", "isa": []}
    load1, load5, load15 = os.getloadavg()
    return {
        "utc": datetime.now(UTC).isoformat(timespec="seconds"),
        **info,
        "cpu_count": os.cpu_count(),
        "loadavg": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }
