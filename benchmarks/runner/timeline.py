"""A run on one time axis: client-side series from the records, beside the server's.

Both count seconds from the run's start (`origin`, time.time() as the first level began:
the clock of the records' `start_s` and of server_metrics' samples). `client_rows` bins
every request each level sent (warm-up included) into `step_s` bins (pure);
`write_timeline` draws them with server_metrics' rows, level by level, in timeline.png.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.runner.records import RequestRecord

CLIENT_FILE = "client_series.csv"
TIMELINE = "timeline.png"
CLIENT_COLUMNS = (
    "t_s", "level", "in_flight", "completed_per_s", "failed_per_s", "output_tokens_per_s",
)  # fmt: skip


@dataclass(frozen=True)
class Span:
    """One level's Locust run, wall-clock seconds (its window.json)."""

    name: str
    level: float
    start: float
    warmup_end: float
    stop: float


def client_rows(
    records: Sequence[RequestRecord], spans: Sequence[Span], origin: float, step_s: float = 1.0
) -> list[dict[str, Any]]:
    """Per level, per `step_s` bin [t, t + step_s): requests in flight at t + step_s, and the
    requests completed, failed and output tokens of the ones that ended in the bin, per s."""
    rows = []
    for span in spans:
        mine = [r for r in records if r.level == span.level]
        for i in range(math.ceil((span.stop - span.start) / step_s)):
            lo = span.start + i * step_s
            hi = lo + step_s
            ended = [r for r in mine if lo <= r.end_s < hi]
            ok = [r for r in ended if r.success]
            rows.append(
                {
                    "t_s": round(hi - origin, 3),
                    "level": span.level,
                    "in_flight": sum(1 for r in mine if r.start_s <= hi < r.end_s),
                    "completed_per_s": round(len(ok) / step_s, 3),
                    "failed_per_s": round((len(ended) - len(ok)) / step_s, 3),
                    "output_tokens_per_s": round(sum(r.output_tokens for r in ok) / step_s, 2),
                }
            )
    return rows


def write_client_series(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CLIENT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_timeline(
    path: Path,
    client: Sequence[dict[str, Any]],
    server: Sequence[dict[str, Any]],
    records: Sequence[RequestRecord],
    spans: Sequence[Span],
    origin: float,
    note: str,
) -> Path:
    """Four panels over the run's seconds: requests in flight (client) with running and
    waiting (server); output tok/s (client) with generated tok/s (server); every request's
    TTFT; KV cache usage and cache hit rates (server). Warm-ups shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def col(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
        return [float("nan") if r[key] is None else float(r[key]) for r in rows]

    by_replica: dict[str, list[dict[str, Any]]] = {}
    for row in server:
        by_replica.setdefault(str(row["replica"]), []).append(row)
    many = len(by_replica) > 1

    # a gap between levels: no line across the time between two Locust runs
    breaks = [
        {**prev, "t_s": prev["t_s"] + 1e-3, "in_flight": None, "output_tokens_per_s": None}
        for prev, row in zip(client, client[1:], strict=False)
        if prev["level"] != row["level"]
    ]
    client = sorted([*client, *breaks], key=lambda r: (r["t_s"], r["in_flight"] is not None))
    fig, (load, tput, ttft, cache) = plt.subplots(4, 1, figsize=(13, 11), sharex=True)
    ct = col(client, "t_s")
    load.step(ct, col(client, "in_flight"), where="post", color="k", label="in flight (client)")
    tput.plot(ct, col(client, "output_tokens_per_s"), "k-", label="output tok/s (client)")
    for replica, rows in sorted(by_replica.items()):
        tag = f" r{replica}" if many else ""
        t = col(rows, "t_s")
        load.plot(t, col(rows, "running"), ".-", label=f"running{tag} (server)")
        load.plot(t, col(rows, "waiting"), ".--", label=f"waiting{tag} (server)")
        tput.plot(t, col(rows, "generation_tokens_per_s"), ".-", label=f"generated tok/s{tag}")
        cache.plot(t, [v * 100 for v in col(rows, "kv_cache_usage")], ".-", label=f"KV{tag}")
        for key, text in (("prefix_cache_hit_rate", "prefix hits"), ("mm_cache_hit_rate", "mm")):
            cache.plot(t, [v * 100 for v in col(rows, key)], "x:", label=f"{text}{tag}")
    ok = [r for r in records if r.success and r.ttft_s is not None]
    ttft.plot(
        [r.start_s + (r.ttft_s or 0) - origin for r in ok],
        [(r.ttft_s or 0) * 1000 for r in ok],
        ".",
        markersize=3,
        label=f"TTFT of each request ({len(ok)})",
    )
    load.set_ylabel("requests")
    tput.set_ylabel("tokens / s")
    ttft.set_ylabel("ms")
    cache.set_ylabel("%")
    cache.set_title("KV cache usage; hit rates per interval (gaps: nothing queried)", fontsize=9)
    cache.set_xlabel("seconds since the run's start")
    for ax in (load, tput, ttft, cache):
        for span in spans:
            ax.axvspan(span.start - origin, span.warmup_end - origin, color="0.9")
            ax.axvline(span.start - origin, color="0.6", linewidth=0.8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for span in spans:
        load.annotate(
            span.name, (span.start - origin, 1.0), xycoords=("data", "axes fraction"),
            xytext=(3, -12), textcoords="offset points", fontsize=8,
        )  # fmt: skip
    fig.suptitle(f"Client and server over the run, warm-ups shaded ({note})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
