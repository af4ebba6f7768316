"""`python -m benchmarks compare A B`: two results folders, level by level.

Reads each folder's summary.json (what `python -m benchmarks run` writes), matches levels
by value, prints B against A (absolute and relative differences of throughput, TTFT and
E2E percentiles, errors) and plots both runs side by side. A folder that is not a results
folder is named in one `error:` line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.runner.errors import BenchError, report

# (label, value of a level summary); throughput first, then latencies (ms), then errors
METRICS: tuple[tuple[str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("output tok/s", lambda s: s["output_throughput"]),
    ("req/s", lambda s: s["request_throughput"]),
    ("TTFT p50 ms", lambda s: s["ttft_ms"]["p50"]),
    ("TTFT p99 ms", lambda s: s["ttft_ms"]["p99"]),
    ("E2E p50 ms", lambda s: s["e2e_ms"]["p50"]),
    ("E2E p99 ms", lambda s: s["e2e_ms"]["p99"]),
    ("failed requests", lambda s: s["failed"]),
)


@dataclass(frozen=True)
class Diff:
    level: float
    metric: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def relative(self) -> float | None:
        """(B - A) / A; None when A is 0 or either is missing."""
        return None if self.delta is None or not self.a else self.delta / self.a


def load_summary(folder: Path) -> dict[str, Any]:
    """A results folder's summary.json. Raises BenchError naming the folder and what is
    missing."""
    path = folder / "summary.json"
    what = f"{folder} is not a results folder"
    if not folder.is_dir():
        raise BenchError(f"{what}: no such folder")
    if not path.is_file():
        raise BenchError(f"{what}: it has no summary.json (`python -m benchmarks run` writes one)")
    try:
        summary = json.loads(path.read_text())
        for s in summary["levels"]:
            for _label, value in METRICS:
                value(s)
            float(s["level"])
        str(summary["mode"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(
            f"{what}: its summary.json is not a run's summary ({type(exc).__name__}: {exc})"
        ) from None
    if not summary["levels"]:
        raise BenchError(f"{what}: its summary.json has no levels")
    return dict(summary)


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[Diff]:
    """B against A for every metric of every level both ran. Raises BenchError when the
    two runs are not comparable (closed against open loop, no level in common)."""
    if a["mode"] != b["mode"]:
        raise BenchError(
            f"A is a {a['mode']}-loop run and B a {b['mode']}-loop run: no level matches"
        )
    b_levels = {s["level"]: s for s in b["levels"]}
    common = [s for s in a["levels"] if s["level"] in b_levels]
    if not common:
        raise BenchError(f"no level in common: A ran {levels_text(a)}, B ran {levels_text(b)}")
    return [
        Diff(sa["level"], label, value(sa), value(b_levels[sa["level"]]))
        for sa in common
        for label, value in METRICS
    ]


def levels_text(summary: dict[str, Any]) -> str:
    return ", ".join(f"{s['level']:g}" for s in summary["levels"])


def number(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return str(v)
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"


def signed(v: float | None, percent: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v * 100:+.1f}%" if percent else ("+" if v >= 0 else "") + number(v)


def print_differences(
    diffs: Sequence[Diff], a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]
) -> None:
    """One row per level and metric: A, B, B - A, (B - A) / A."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"B against A ({a['mode']} loop)",
        caption="latencies in ms, over each level's window (warm-up excluded)",
    )
    table.add_column("users" if a["mode"] == "closed" else "rate", justify="right")
    for col in ("metric", "A", "B", "B - A", "(B - A) / A"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    last = None
    for d in diffs:
        table.add_row(
            f"{d.level:g}" if d.level != last else "",
            d.metric, number(d.a), number(d.b), signed(d.delta), signed(d.relative, True),
            end_section=d.metric == METRICS[-1][0],
        )  # fmt: skip
        last = d.level
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(f"A: {names[0]}\nB: {names[1]}", highlight=False)
    console.print(table)
    for x, y, tag in ((a, b, "A"), (b, a, "B")):
        if levels := only(x, y):
            console.print(f"only in {tag}, not compared: {levels}", highlight=False)


def only(x: dict[str, Any], y: dict[str, Any]) -> str:
    theirs = {s["level"] for s in y["levels"]}
    return ", ".join(f"{s['level']:g}" for s in x["levels"] if s["level"] not in theirs)


def write_plot(path: Path, a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> Path:
    """Output tok/s, TTFT and E2E p50/p99 against level, and the throughput against TTFT
    trade-off, of both runs (A solid, B dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.runner.report import style_axis

    def ys(summary: dict[str, Any], key: str, p: str | None = None) -> list[float]:
        values = [s[key] if p is None else s[key][p] for s in summary["levels"]]
        return [float("nan") if v is None else v for v in values]

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
    tok, ttft, e2e, trade = axes
    for summary, tag, color in ((a, "A", "C0"), (b, "B", "C3")):
        xs = [s["level"] for s in summary["levels"]]
        tok.plot(xs, ys(summary, "output_throughput"), "o-", color=color, label=tag)
        for ax, key in ((ttft, "ttft_ms"), (e2e, "e2e_ms")):
            for p, style in (("p50", "o-"), ("p99", "^:")):
                ax.plot(xs, ys(summary, key, p), style, color=color, label=f"{tag} {p}")
        for p, style in (("p50", "o-"), ("p99", "^:")):
            trade.plot(
                ys(summary, "output_throughput"), ys(summary, "ttft_ms", p), style, color=color,
                label=f"{tag} TTFT {p}",
            )  # fmt: skip
    levels = sorted({s["level"] for s in (*a["levels"], *b["levels"])})
    for ax, title in ((tok, "Output tokens / s"), (ttft, "TTFT (ms)"), (e2e, "End-to-end (ms)")):
        ax.set_title(title)
        style_axis(ax, levels, a["mode"])
    trade.set_title("TTFT (ms) against output tokens / s")
    trade.set_xlabel("output tokens / s")
    trade.grid(alpha=0.3)
    trade.legend()
    fig.suptitle(f"A: {names[0]}    B: {names[1]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare(folder_a: Path, folder_b: Path, out: Path | None = None) -> Path:
    """Print B against A and write the plot (default: compare-A-vs-B.png beside B)."""
    a, b = load_summary(folder_a), load_summary(folder_b)
    diffs = differences(a, b)
    names = (str(folder_a), str(folder_b))
    print_differences(diffs, a, b, names)
    path = out or folder_b.resolve().parent / f"compare-{folder_a.name}-vs-{folder_b.name}.png"
    if not path.parent.is_dir():
        raise BenchError(f"--out {path}: no folder {path.parent}")
    return write_plot(path, a, b, names)


DESCRIPTION = __doc__.split("\n\n")[0]


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", type=Path, metavar="A", help="a results folder (the reference)")
    p.add_argument("b", type=Path, metavar="B", help="a results folder compared with A")
    p.add_argument(
        "--out", type=Path, help="the plot (default: compare-A-vs-B.png in B's parent folder)"
    )


def main(args: argparse.Namespace) -> int:
    try:
        path = compare(args.a, args.b, args.out)
    except BenchError as exc:
        return report(exc)
    print(f"plot: {path}")
    return 0
