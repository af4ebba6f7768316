"""`python -m serve panels`: draw the dashboard's panels from a Prometheus' data (a PNG),
for a look at a run without Grafana, and count the queries that returned data.

python -m serve panels --config configs/deployments/cpu-tiny.yaml \
    [--prometheus http://127.0.0.1:9090] [--minutes 15] [--out panels.png]

Each panel of serve.render.dashboard is queried over the last `--minutes` through
Prometheus' HTTP API (/api/v1/query_range) and drawn as Grafana would: one line per
series, named by the query's legend. A query that returns no finite value is listed.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from serve.config.deployment import ConfigError, load_config
from serve.monitor.prometheus import DEFAULT_PORT, HOST
from serve.render.dashboard import Panel, Query, panels


@dataclass(frozen=True)
class Series:
    """One line of a panel: its legend and (unix time, value) points."""

    legend: str
    points: list[tuple[float, float]]

    @property
    def has_data(self) -> bool:
        return any(math.isfinite(v) for _, v in self.points)


class PrometheusQueryError(RuntimeError):
    """Prometheus could not be reached or refused a query; one line naming it."""


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's legend format with `{{label}}` filled in (pure)."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), fmt)


def to_series(query: Query, result: list[dict]) -> list[Series]:
    """A query_range `result` (matrix) as Series (pure). Prometheus sends values as strings,
    NaN as "NaN"."""
    return [
        Series(legend(query.legend, r["metric"]), [(float(t), float(v)) for t, v in r["values"]])
        for r in result
    ]


def query_range(
    http: httpx.Client, expr: str, start: float, end: float, step_s: float
) -> list[dict]:
    """The matrix Prometheus returns for `expr` over [start, end]."""
    params: dict[str, str | float] = {"query": expr, "start": start, "end": end, "step": step_s}
    try:
        r = http.get("/api/v1/query_range", params=params)
    except httpx.HTTPError as exc:
        raise PrometheusQueryError(f"cannot reach Prometheus at {http.base_url}: {exc}") from None
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    if r.status_code != 200 or body.get("status") != "success":
        raise PrometheusQueryError(
            f"Prometheus refused {expr!r}: {body.get('error') or r.text[:200]}"
        )
    return body["data"]["result"]


# Per panel, per query: the series the query returned.
PanelData = list[list[list[Series]]]


def fetch(
    prometheus_url: str, shown: list[Panel], start: float, end: float, step_s: float = 2
) -> PanelData:
    """Every panel's series over [start, end], query by query."""
    with httpx.Client(base_url=prometheus_url, timeout=30) as http:
        return [
            [to_series(q, query_range(http, q.expr, start, end, step_s)) for q in p.queries]
            for p in shown
        ]


def empty_queries(shown: list[Panel], data: PanelData) -> list[str]:
    """'panel: query' of every query that returned no finite value (pure)."""
    return [
        f"{panel.title}: {q.expr}"
        for panel, per_query in zip(shown, data, strict=True)
        for q, series in zip(panel.queries, per_query, strict=True)
        if not any(x.has_data for x in series)
    ]


def draw(shown: list[Panel], data: PanelData, out: Path, title: str) -> Path:
    """The panels as a grid of line plots, two per row, time in minutes from the start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(shown) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.2 * rows), squeeze=False)
    lines = [[x for per_query in panel for x in per_query] for panel in data]
    t0 = min((x.points[0][0] for panel in lines for x in panel if x.points), default=0.0)
    for ax, panel, series in zip(axes.flat, shown, lines, strict=False):
        for s in series:
            xs = [(t - t0) / 60 for t, _ in s.points]
            ax.plot(xs, [v for _, v in s.points], label=s.legend or panel.title, linewidth=1.2)
        ax.set_title(f"{panel.title} ({panel.unit})", fontsize=10)
        ax.set_xlabel("minutes", fontsize=8)
        ax.tick_params(labelsize=8)
        if series:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / rows / 3.2))  # the title above the top row
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serve panels",
        description="Draw the deployment's dashboard panels from Prometheus' data into a PNG.",
    )
    p.add_argument("--config", type=Path, required=True, help="deployment YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--prometheus",
        default=f"http://{HOST}:{DEFAULT_PORT}",
        help="Prometheus' URL (default: the one `python -m serve --monitor` starts)",
    )
    p.add_argument("--minutes", type=float, default=15, help="how far back (default 15)")
    p.add_argument("--out", type=Path, default=Path("panels.png"), help="the PNG to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.minutes > 0:
        print(f"error: --minutes must be above 0, got {args.minutes:g}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = panels(cfg)
    end = time.time()
    try:
        data = fetch(args.prometheus.rstrip("/"), shown, end - args.minutes * 60, end)
    except PrometheusQueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    draw(shown, data, args.out, f"{cfg.model_name}: last {args.minutes:g} min")
    empty = empty_queries(shown, data)
    total = sum(len(p.queries) for p in shown)
    print(
        f"{total - len(empty)} of {total} queries ({len(shown)} panels) returned data; "
        f"wrote {args.out}"
    )
    for line in empty:
        print(f"  no data: {line}")
    return 0
