"""What machine a figure was measured on: CPU model, the instruction sets that decide
vLLM's CPU speed, and the load average (these machines are shared and noisy)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from serve.host import ISA_FLAGS, host_cpu


def machine_state() -> dict[str, Any]:
    """CPU model, ISA flags and load average now; recorded at each phase of a comparison."""
    cpu = host_cpu()
    load1, load5, load15 = os.getloadavg()
    return {
        "utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu["cpu_model"],
        "isa": [f for f in ISA_FLAGS if f in cpu["flags"]],
        "cpu_count": os.cpu_count(),
        "loadavg": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }
