"""Client-side series from known records on the run's time axis, and the plots drawn from
them with server rows and level summaries."""

from __future__ import annotations

from pathlib import Path

from benchmarks.runner.metrics import summarise
from benchmarks.runner.records import RequestRecord
from benchmarks.runner.report import write_tradeoff
from benchmarks.runner.server_metrics import Sample, series_rows
from benchmarks.runner.timeline import Span, client_rows, write_timeline

ORIGIN = 1000.0


def rec(start: float, latency: float, level: float, ok: bool = True) -> RequestRecord:
    return RequestRecord(
        start_s=start, success=ok, ttft_s=0.2 if ok else None, latency_s=latency,
        output_tokens=8 if ok else 0, level=level, error="" if ok else "HTTP 500",
    )  # fmt: skip


RECORDS = [
    rec(1000.0, 1.5, 1.0),  # ends at 1001.5
    rec(1001.5, 0.2, 1.0, ok=False),  # ends at 1001.7
    rec(1003.0, 2.5, 2.0),  # second level: two users
    rec(1003.0, 0.5, 2.0),
]
SPANS = [Span("users-1", 1.0, 1000.0, 1000.5, 1002.0), Span("users-2", 2.0, 1003.0, 1003.5, 1005.0)]


def test_client_rows_bin_each_level_by_second() -> None:
    rows = client_rows(RECORDS, SPANS, ORIGIN)
    assert [(r["t_s"], r["level"]) for r in rows] == [
        (1.0, 1.0), (2.0, 1.0), (4.0, 2.0), (5.0, 2.0),
    ], rows  # fmt: skip
    first, second, third, fourth = rows
    assert first["in_flight"] == 1 and first["completed_per_s"] == 0, first  # still running at 1 s
    assert second["completed_per_s"] == 1 and second["failed_per_s"] == 1, second
    assert second["output_tokens_per_s"] == 8 and second["in_flight"] == 0, second
    assert third["in_flight"] == 1 and third["completed_per_s"] == 1, third  # one ended at 3.5 s
    assert fourth["in_flight"] == 1 and fourth["completed_per_s"] == 0, fourth  # ends at 5.5 s


def test_timeline_and_tradeoff_plots(tmp_path: Path) -> None:
    samples = [
        Sample(1000.0 + t, replica, level, {"running": t % 3, "waiting": 0.0,
               "kv_cache_usage": 0.1, "prefix_cache_queries": 10.0 * t,
               "prefix_cache_hits": 2.0 * t, "generation_tokens": 8.0 * t})
        for t in range(6) for replica in ("0", "1")
        for level in ([1.0] if t < 3 else [2.0])
    ]  # fmt: skip
    server = series_rows(samples, ORIGIN)
    path = write_timeline(
        tmp_path / "timeline.png",
        client_rows(RECORDS, SPANS, ORIGIN),
        server,
        RECORDS,
        SPANS,
        ORIGIN,
        "2 CPU cores shared",
    )
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 20_000, path
    sums = [
        {"level": lv, **summarise([r for r in RECORDS if r.level == lv], 2.0)} for lv in (1.0, 2.0)
    ]
    png = write_tradeoff(tmp_path / "tradeoff.png", "closed", sums, "2 CPU cores shared")
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000, png
