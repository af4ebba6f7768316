"""Plots (matplotlib, Agg) and the terminal table (rich) of a run's summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.runner.run import LevelResult

CACHES = {"prefix_cache": "prefix cache (tokens)", "mm_cache": "processed-image cache (images)"}
PLOTS = ("throughput.png", "latency_percentiles.png", "ttft_distribution.png", "tradeoff.png")


def x_label(mode: str) -> str:
    return (
        "concurrent users (closed loop)" if mode == "closed" else "arrival rate, req/s (open loop)"
    )


def write_plots(folder: Path, mode: str, levels: Sequence[LevelResult], note: str) -> list[Path]:
    """Throughput and latency percentiles vs level, the TTFT distribution per level, and
    the throughput against TTFT trade-off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [lv.level for lv in levels]
    sums = [lv.summary for lv in levels]
    out = []

    fig, (tok, req) = plt.subplots(1, 2, figsize=(11, 4.2))
    tok.plot(xs, [s["output_throughput"] for s in sums], "o-", label="output")
    tok.set_title("Output tokens / s")
    req.plot(xs, [s["request_throughput"] for s in sums], "o-", label="completed")
    req.plot(xs, [s["goodput"] for s in sums], "^:", label="goodput (within SLO)")
    req.set_title("Requests / s")
    for ax in (tok, req):
        style_axis(ax, xs, mode)
    fig.suptitle(f"Throughput ({note})", fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / PLOTS[0], dpi=100)
    plt.close(fig)
    out.append(folder / PLOTS[0])

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, key, title in zip(
        axes, ("ttft_ms", "tpot_ms", "e2e_ms"), ("TTFT", "TPOT", "End-to-end"), strict=True
    ):
        for p, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
            ax.plot(
                xs,
                [s[key][p] if s[key][p] is not None else float("nan") for s in sums],
                style,
                label=p,
            )
        ax.set_title(f"{title} (ms)")
        style_axis(ax, xs, mode)
    fig.suptitle(f"Latency percentiles ({note})", fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / PLOTS[1], dpi=100)
    plt.close(fig)
    out.append(folder / PLOTS[1])

    fig, ax = plt.subplots(figsize=(7, 4.5))
    per_level = [
        (lv.level, [r.ttft_s * 1000 for r in lv.records if r.success and r.ttft_s is not None])
        for lv in levels
    ]
    top = max((max(t) for _, t in per_level if t), default=1.0)
    bins = [top * i / 40 for i in range(41)]  # the same bins for every level
    for level, ttfts in per_level:
        if ttfts:
            ax.hist(
                ttfts,
                bins=bins,
                histtype="step",
                linewidth=1.5,
                label=f"{level:g} ({len(ttfts)} requests)",
            )
    ax.set_xlabel("time to first token (ms)")
    ax.set_ylabel("requests")
    if levels:
        ax.legend(title=x_label(mode))
    ax.set_title(f"TTFT distribution\n({note})", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / PLOTS[2], dpi=100)
    plt.close(fig)
    out.append(folder / PLOTS[2])
    out.append(write_tradeoff(folder / PLOTS[3], mode, sums, note))
    return out


def write_tradeoff(path: Path, mode: str, sums: Sequence[dict[str, Any]], note: str) -> Path:
    """Output tok/s against TTFT p50 and p99: one point per level, labelled with it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [s["output_throughput"] for s in sums]
    for p, style in (("p50", "o-"), ("p99", "^:")):
        ys = [s["ttft_ms"][p] if s["ttft_ms"][p] is not None else float("nan") for s in sums]
        ax.plot(xs, ys, style, label=f"TTFT {p}")
        for s, x, y in zip(sums, xs, ys, strict=True):
            ax.annotate(f"{s['level']:g}", (x, y), xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("output tokens / s")
    ax.set_ylabel("time to first token (ms)")
    ax.set_title(
        f"Throughput against latency, points labelled by {x_label(mode)}\n({note})", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def style_axis(ax: Any, xs: Sequence[float], mode: str) -> None:
    """Level on x (log 2 for wide closed-loop sweeps), ticks at the levels, legend, grid."""
    if mode == "closed" and len(xs) > 1 and max(xs) / max(min(xs), 1) >= 8:
        ax.set_xscale("log", base=2)
    if xs:
        ax.set_xticks(list(xs), [f"{x:g}" for x in xs])
    ax.set_xlabel(x_label(mode))
    ax.grid(alpha=0.3)
    ax.legend()


def ms(d: dict[str, float | None], p: str) -> str:
    v = d.get(p)
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def print_table(summary: dict[str, Any], folder: Path | None = None) -> None:
    """The run's summary as a rich table, one row per level."""
    from rich.console import Console
    from rich.table import Table

    closed = summary["mode"] == "closed"
    table = Table(
        title=f"{summary['scenario']}: {summary['model']} ({summary['note']})",
        caption="latencies in ms; rates over each level's window (warm-up excluded)",
    )
    table.add_column("users" if closed else "rate", justify="right")
    units = summary.get("units", {"request": "req", "image": "images"})
    studies = units["request"] != "req"  # a CT study scenario: its images/s are slices/s
    for col in (
        f"{units['request']}/s",
        *([f"{units['image']}/s"] if studies else []),
        "out tok/s",
        "total tok/s",
        "goodput",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "ITL p50",
        "E2E p50",
        "E2E p99",
        "errors",
    ):
        table.add_column(col, justify="right")
    for s in summary["levels"]:
        # a study scenario: studies and slices of the first questions completed (a follow-up
        # asks about a study already counted; a radiograph is no volume)
        per_s = s["studies"]["studies_per_s"] if "studies" in s else s["request_throughput"]
        images_per_s = s["studies"]["slices_per_s"] if "studies" in s else s["image_throughput"]
        table.add_row(
            f"{s['level']:g}",
            f"{per_s:.2f}",
            *([f"{images_per_s:.2f}"] if studies else []),
            f"{s['output_throughput']:.1f}",
            f"{s['total_token_throughput']:.0f}",
            f"{s['goodput']:.2f}",
            ms(s["ttft_ms"], "p50"), ms(s["ttft_ms"], "p99"),
            ms(s["tpot_ms"], "p50"), ms(s["tpot_ms"], "p99"),
            ms(s["itl_ms"], "p50"),
            ms(s["e2e_ms"], "p50"), ms(s["e2e_ms"], "p99"),
            f"{s['failed']}/{s['requests']}",
        )  # fmt: skip
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log or a pipe: do not squeeze the columns
    console.print(table)
    for line in role_lines(summary):
        console.print(line)
    if folder is not None:
        console.print(f"results: {folder}")


def role_lines(summary: dict[str, Any]) -> list[str]:
    """Per level of a study scenario: each role's TTFT and latency medians, the follow-up /
    first ratios; then the run's prefix-cache and processed-image-cache hits."""
    out = []
    for s in summary["levels"]:
        roles = s.get("roles") or {}
        parts = [
            f"{role} {r['completed']}/{r['requests']}: TTFT p50 {ms(r['ttft_ms'], 'p50')}, "
            f"E2E p50 {ms(r['e2e_ms'], 'p50')}"
            for role, r in roles.items()
        ]
        if parts:
            ratios = s["studies"]["follow_up_over_first"]
            shown = ", ".join(
                f"{k.removesuffix('_ms')} {v:.2f}x" for k, v in ratios.items() if v is not None
            )
            tail = f"; follow-up / first: {shown}" if shown else ""
            out.append(f"level {s['level']:g}: " + "; ".join(parts) + tail)
    for name, c in (summary.get("caches") or {}).items():
        what = CACHES.get(name, name)
        rate = "-" if c["hit_rate"] is None else f"{c['hit_rate']:.1%}"
        out.append(f"{what} over the run: {c['hits']:,.0f} hits of {c['queries']:,.0f} ({rate})")
    return out
