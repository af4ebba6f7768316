"""Records -> summary: rates, latency percentiles, error rate and goodput (pure).

Definitions follow vLLM's `calculate_metrics` (vllm/benchmarks/serve.py) so that figures
can be compared with its benchmark: TPOT = (E2E - TTFT) / (output tokens - 1), counted as 0
for one-token outputs when judging the SLO; ITLs are pooled over all requests; percentiles
use numpy's linear interpolation. Rates divide by the measurement window (the level's
duration without its warm-up), and a request belongs to the window if it ended inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.runner.records import RequestRecord
from serve.workload.request import Slo

PERCENTILES = (50, 90, 99)


def in_window(records: Sequence[RequestRecord], start: float, end: float) -> list[RequestRecord]:
    """Records whose request ended within [start, end] (wall-clock seconds)."""
    return [r for r in records if start <= r.end_s <= end]


def is_good(record: RequestRecord, slo: Slo) -> bool:
    """A successful request that meets every limit the SLO sets."""
    if not record.success or record.ttft_s is None:
        return False
    checks = (
        (slo.ttft_ms, record.ttft_s),
        (slo.tpot_ms, record.tpot_s),
        (slo.e2e_ms, record.latency_s),
    )
    return all(limit is None or value * 1000 <= limit for limit, value in checks)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by numpy's linear interpolation between the closest
    ranks, as vLLM's benchmark computes it; None when there are no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def distribution_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    """mean and p50/p90/p99 in milliseconds (None when there are no values)."""
    if not values_s:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    ms = [v * 1000 for v in values_s]
    out: dict[str, float | None] = {"mean": round(float(np.mean(ms)), 3)}
    for p in PERCENTILES:
        value = percentile(ms, p)
        out[f"p{p}"] = None if value is None else round(value, 3)
    return out


def summarise(
    records: Sequence[RequestRecord], window_s: float, slo: Slo | None = None
) -> dict[str, Any]:
    """The summary of one level's records measured over `window_s` seconds."""
    if window_s <= 0:
        raise ValueError(f"window_s must be positive, got {window_s}")
    slo = slo or Slo()
    ok = [r for r in records if r.success]
    failed = [r for r in records if not r.success]
    output_tokens = sum(r.output_tokens for r in ok)
    images = sum(r.n_images for r in ok)
    prompt_tokens = sum(r.prompt_tokens for r in ok)
    good = sum(1 for r in ok if is_good(r, slo))
    errors: dict[str, int] = {}
    for r in failed:
        key = r.error.splitlines()[0][:160] if r.error else "unknown error"
        errors[key] = errors.get(key, 0) + 1
    return {
        "window_s": round(window_s, 3),
        "requests": len(records),
        "completed": len(ok),
        "failed": len(failed),
        "error_rate": round(len(failed) / len(records), 4) if records else 0.0,
        "request_throughput": round(len(ok) / window_s, 4),
        "image_throughput": round(images / window_s, 4),
        "output_throughput": round(output_tokens / window_s, 3),
        "total_token_throughput": round((prompt_tokens + output_tokens) / window_s, 3),
        "goodput": round(good / window_s, 4),
        "good_requests": good,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "mean_output_tokens": round(output_tokens / len(ok), 2) if ok else 0.0,
        "ttft_ms": distribution_ms([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": distribution_ms([r.tpot_s for r in ok if r.output_tokens > 1]),
        "itl_ms": distribution_ms([x for r in ok for x in r.itl_s]),
        "e2e_ms": distribution_ms([r.latency_s for r in ok]),
        "errors": errors,
    }


def best_level(levels: Sequence[dict[str, Any]], key: str = "output_throughput") -> dict[str, Any]:
    """The level summary with the highest `key` (the first one on ties)."""
    if not levels:
        raise ValueError("no levels to choose from")
    return max(levels, key=lambda s: (s[key], -levels.index(s)))


def spread(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Median, min and max of per-round figures (rounds without one are left out); the
    summary of alternating A/B rounds."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return {"median": None, "min": None, "max": None, "rounds": 0}
    return {
        "median": round(float(np.median(vals)), 3),
        "min": vals[0],
        "max": vals[-1],
        "rounds": len(vals),
    }
