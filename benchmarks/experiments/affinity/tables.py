"""The affinity experiment's tables: every round (alternating), then per policy the median
(min-max) over its rounds; the cells are the figures of benchmarks.experiments.affinity.figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from benchmarks.experiments.affinity.figures import REFERENCE, RoundResult, round_figures
from benchmarks.runner.report import ms

if TYPE_CHECKING:
    from rich.table import Table


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def round_cells(row: dict[str, Any]) -> list[str]:
    """A row of the rounds table."""
    return [
        str(row["round"]),
        row["policy"],
        ms(row, "followup_ttft_p50_ms"),
        ms(row, "followup_ttft_p90_ms"),
        ms(row, "first_ttft_p50_ms"),
        " / ".join(percent(h) for h in row["hit_rate"]),
        percent(row["hit_rate_all"]),
        " / ".join(str(n) for n in row["replica_requests"]),
        f"{row['failed']}/{row['requests']}",
        "-" if row["loadavg_1m"] is None else f"{row['loadavg_1m']:.2f}",
    ]


def span(s: dict[str, Any], fmt: str = "ms") -> str:
    """A spread as `median (min-max)`, in ms or as a ratio."""
    if s["median"] is None:
        return "-"
    if fmt == "x":
        return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"
    return f"{ms(s, 'median')} ({ms(s, 'min')}-{ms(s, 'max')})"


def summary_cells(policy: str, s: dict[str, Any], reference: str = REFERENCE) -> list[str]:
    """A row of the per-policy table."""
    return [
        policy,
        span(s["followup_ttft_p50_ms"]),
        span(s["followup_ttft_p90_ms"]),
        span(s["first_ttft_p50_ms"]),
        "-" if policy == reference else span(s[f"followup_p50_vs_{reference}"], "x"),
        " / ".join(percent(h) for h in s["hit_rate"]),
        percent(s["hit_rate_all"]),
        " / ".join(str(n) for n in s["replica_requests"]),
        f"{s['failed']}/{s['requests']}",
    ]


def tables(results: Sequence[RoundResult], summary: Mapping[str, Any], note: str) -> list[Table]:
    from rich.table import Table

    rounds = Table(title="every round (alternating)", caption="TTFT in ms; replicas r0 / r1 / ...")
    for col in (
        "round", "policy", "follow-up TTFT p50", "p90", "first-turn TTFT p50",
        "prefix-cache hit rate by replica", "all", "requests by replica", "failed", "load 1m",
    ):  # fmt: skip
        rounds.add_column(col, justify="left" if col == "policy" else "right")
    for r in results:
        rounds.add_row(*round_cells(round_figures(r)))
    per = Table(
        title="per policy: median (min-max) over its rounds; hit rates over all its rounds",
        caption=note,
    )
    for col in (
        "policy", "follow-up TTFT p50", "follow-up TTFT p90", "first-turn TTFT p50",
        f"follow-up p50 / {REFERENCE}", "hit rate by replica", "all", "requests by replica",
        "failed",
    ):  # fmt: skip
        per.add_column(col, justify="left" if col == "policy" else "right")
    for policy, s in summary.items():
        per.add_row(*summary_cells(policy, s))
    return [rounds, per]
