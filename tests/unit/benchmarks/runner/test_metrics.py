"""Benchmark records and their summary: known records give known figures."""

from __future__ import annotations

import json

import pytest

from benchmarks.runner.metrics import best_level, in_window, is_good, percentile, summarise
from benchmarks.runner.records import RequestRecord, StreamParser, parse_lines
from serve.workload.request import Slo


def rec(ttft: float, latency: float, out: int = 11, *, start: float = 100.0, prompt: int = 300,
        itl: list[float] | None = None) -> RequestRecord:  # fmt: skip
    return RequestRecord(
        start_s=start,
        success=True,
        status=200,
        ttft_s=ttft,
        itl_s=itl if itl is not None else [],
        latency_s=latency,
        prompt_tokens=prompt,
        output_tokens=out,
    )


def failed(error: str = "HTTP 500: boom", start: float = 100.0) -> RequestRecord:
    return RequestRecord(start_s=start, success=False, error=error, status=500, latency_s=0.5)


KNOWN = [rec(0.1, 1.1), rec(0.2, 1.2), rec(0.3, 1.3), rec(0.4, 2.4)]


def test_percentiles_of_known_records() -> None:
    s = summarise(KNOWN, window_s=2.0)
    # TTFT 100..400 ms: numpy's linear percentiles.
    assert s["ttft_ms"] == {"mean": 250.0, "p50": 250.0, "p90": 370.0, "p99": 397.0}, s["ttft_ms"]
    # TPOT = (E2E - TTFT) / (11 - 1): 100, 100, 100, 200 ms.
    assert s["tpot_ms"]["p50"] == pytest.approx(100.0), s["tpot_ms"]
    assert s["tpot_ms"]["mean"] == pytest.approx(125.0), s["tpot_ms"]
    assert s["e2e_ms"]["p50"] == pytest.approx(1250.0), s["e2e_ms"]
    assert s["e2e_ms"]["p99"] == pytest.approx(2367.0), s["e2e_ms"]


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # order does not matter
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 90) == pytest.approx(3.7)  # 3 + 0.7 x (4 - 3)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_overload_and_summary_report_the_same_p99() -> None:
    """Two reports of the same records give one p99 (overload once took the nearest rank)."""
    from benchmarks.experiments.overload import figures

    records = [*KNOWN, failed()]
    numbers = figures(records, health=[], rss=[], timeout_s=60)
    summary = summarise(records, window_s=2.0)
    assert numbers["p99_latency_s"] * 1000 == pytest.approx(summary["e2e_ms"]["p99"]), numbers
    assert numbers["p50_latency_s"] * 1000 == pytest.approx(summary["e2e_ms"]["p50"]), numbers
    assert numbers["p99_error_latency_s"] == 0.5, numbers


def test_rates_divide_by_window() -> None:
    s = summarise([*KNOWN, failed()], window_s=2.0)
    assert (s["requests"], s["completed"], s["failed"]) == (5, 4, 1), s
    assert s["request_throughput"] == pytest.approx(2.0), s
    assert s["output_throughput"] == pytest.approx(4 * 11 / 2.0), s
    assert s["total_token_throughput"] == pytest.approx(4 * (300 + 11) / 2.0), s
    assert s["error_rate"] == pytest.approx(0.2), s
    assert s["errors"] == {"HTTP 500: boom": 1}, s
    # the failure's latency is not in the latency figures
    assert s["e2e_ms"]["mean"] == pytest.approx(1500.0), s["e2e_ms"]


def test_goodput_counts_requests_meeting_every_limit() -> None:
    slo = Slo(ttft_ms=250, tpot_ms=150)
    # TTFT passes for the first two; TPOT (100,100,100,200) passes for the first three.
    assert [is_good(r, slo) for r in KNOWN] == [True, True, False, False]
    s = summarise(KNOWN, window_s=4.0, slo=slo)
    assert s["good_requests"] == 2 and s["goodput"] == pytest.approx(0.5), s
    no_slo = summarise(KNOWN, window_s=4.0)
    assert no_slo["goodput"] == no_slo["request_throughput"] == pytest.approx(1.0), no_slo


def test_single_token_output_has_zero_tpot_for_the_slo() -> None:
    one = rec(0.1, 0.1, out=1)
    assert one.tpot_s == 0.0
    assert is_good(one, Slo(tpot_ms=1))
    assert summarise([one], 1.0)["tpot_ms"]["p50"] is None  # not in the TPOT figures


def test_itls_are_pooled_over_requests() -> None:
    s = summarise([rec(0.1, 0.4, itl=[0.1, 0.2]), rec(0.1, 0.4, itl=[0.3])], window_s=1.0)
    assert s["itl_ms"]["p50"] == pytest.approx(200.0), s["itl_ms"]


def test_empty_and_bad_window() -> None:
    s = summarise([], window_s=1.0)
    assert s["requests"] == 0 and s["error_rate"] == 0.0 and s["ttft_ms"]["p50"] is None, s
    with pytest.raises(ValueError, match="window_s"):
        summarise(KNOWN, window_s=0)


def test_window_keeps_requests_that_ended_inside_it() -> None:
    early = rec(0.1, 1.0, start=95.0)  # ends at 96
    inside = rec(0.1, 1.0, start=99.5)  # ends at 100.5
    late = rec(0.1, 5.0, start=104.0)  # ends at 109
    assert in_window([early, inside, late], 100.0, 105.0) == [inside]


def test_best_level_is_highest_output_throughput() -> None:
    levels = [{"level": 1, "output_throughput": 10.0}, {"level": 4, "output_throughput": 30.0},
              {"level": 16, "output_throughput": 30.0}]  # fmt: skip
    assert best_level(levels)["level"] == 4


def chunk(content: str | None = "x", finish: str | None = None) -> str:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return "data: " + json.dumps({"choices": [choice]})


USAGE = "data: " + json.dumps(
    {"choices": [], "usage": {"prompt_tokens": 290, "completion_tokens": 3, "total_tokens": 293}}
)


def test_stream_parser_times_tokens_and_reads_usage() -> None:
    p = StreamParser(start=10.0, wall_start=1000.0, n_images=1)
    p.feed(b": ping\n", 10.1)  # SSE comment: ignored
    p.feed(chunk("", None) + "\n", 10.5)  # first chunk (role): TTFT
    p.feed("\n", 10.5)
    p.feed(chunk("a"), 10.7)
    p.feed(chunk("b", "length"), 11.0)
    p.feed(USAGE, 11.01)  # usage chunk: no token, does not move the end
    p.feed("data: [DONE]", 11.02)
    r = p.finish(11.03)
    assert r.success, r.error
    assert r.ttft_s == pytest.approx(0.5) and r.latency_s == pytest.approx(1.0), r
    assert r.itl_s == pytest.approx([0.2, 0.3]), r.itl_s
    assert (r.prompt_tokens, r.output_tokens, r.finish_reason) == (290, 3, "length"), r
    assert r.tpot_s == pytest.approx(0.25), r
    assert r.start_s == 1000.0 and r.end_s == pytest.approx(1001.0)
    assert list(parse_lines([r.to_json()])) == [r]


def test_stream_without_a_token_is_a_failure() -> None:
    p = StreamParser(start=0.0, wall_start=0.0)
    p.feed(USAGE, 0.2)
    p.feed("data: [DONE]", 0.3)
    r = p.finish(0.4)
    assert not r.success and "without a single token" in r.error, r
    assert r.ttft_s is None and r.latency_s == pytest.approx(0.4), r


def test_stream_error_chunk_and_missing_usage_fail() -> None:
    p = StreamParser(start=0.0, wall_start=0.0)
    p.feed(chunk("a"), 0.1)
    p.feed('data: {"error": {"message": "engine dead", "code": 500}}', 0.2)
    r = p.finish(0.3)
    assert not r.success and "engine dead" in r.error, r
    p = StreamParser(start=0.0, wall_start=0.0)
    p.feed(chunk("a"), 0.1)
    assert "no usage" in p.finish(0.2).error
    p = StreamParser(start=0.0, wall_start=0.0)
    p.feed("data: {not json", 0.1)
    assert "malformed" in p.finish(0.2).error


def test_transport_error_is_recorded() -> None:
    p = StreamParser(start=0.0, wall_start=0.0)
    r = p.finish(2.0, status=0, error="ConnectionRefusedError: [Errno 111]")
    assert not r.success and r.error.startswith("ConnectionRefused") and r.latency_s == 2.0, r
