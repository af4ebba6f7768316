"""Server-side series: a real vLLM 0.32 /metrics page parsed, counters turned into per-interval
rates, the targets of a deployment, and the sampler against a page served over HTTP.

tests/unit/data/vllm-0.32-metrics.txt is a whole /metrics page of a vLLM 0.32.0 CPU server
(the tiny stand-in) read by the runner at the end of a 16-user level, 12 requests running.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.runner.server_metrics import (
    COLUMNS,
    Sample,
    Sampler,
    parse_page,
    read_series,
    series_rows,
    targets,
    write_series,
)
from serve.config.deployment import load_config
from tests.conftest import CONFIGS, REPO

PAGE = (REPO / "tests" / "unit" / "data" / "vllm-0.32-metrics.txt").read_text()


def test_a_real_page_gives_every_series() -> None:
    values = parse_page(PAGE)
    assert values == {
        "running": 12.0,
        "waiting": 0.0,
        "kv_cache_usage": pytest.approx(0.019533634476864847),
        "prefix_cache_queries": 102564.0,
        "prefix_cache_hits": 75776.0,
        "mm_cache_queries": 0.0,
        "mm_cache_hits": 0.0,
        "preemptions": 0.0,
        "prompt_tokens": 101565.0,
        "generation_tokens": 18443.0,
        "request_success": 273.0,  # finished requests, every finish reason
    }, values


def test_two_engines_are_summed_and_their_kv_usage_averaged() -> None:
    lines = []
    for line in PAGE.splitlines():
        lines.append(line)
        if line.startswith("vllm:") and 'engine="0"' in line:
            name, value = line.rsplit(" ", 1)
            half = float(value) / 2 if "kv_cache_usage" in name else float(value)
            lines.append(name.replace('engine="0"', 'engine="1"') + f" {half}")
    values = parse_page("\n".join(lines) + "\n")
    assert values["running"] == 24.0 and values["prefix_cache_hits"] == 2 * 75776.0, values
    assert values["kv_cache_usage"] == pytest.approx(0.019533634476864847 * 0.75), values


def test_a_page_without_vllm_series_gives_nothing_and_garbage_is_refused() -> None:
    assert parse_page("# TYPE up gauge\nup 1\n") == {}
    with pytest.raises(ValueError):
        parse_page("<html>not found</html>\n")


def sample(t: float, replica: str = "0", level: float | None = 4.0, **values: float) -> Sample:
    return Sample(t, replica, level, values)


def test_counters_become_per_interval_rates() -> None:
    origin = 1000.0
    samples = [
        sample(1002.0, running=3, waiting=1, kv_cache_usage=0.5, prefix_cache_queries=100,
               prefix_cache_hits=40, generation_tokens=10, preemptions=0),
        # 2 s later: 300 queried tokens of which 150 hit, 60 tokens generated
        sample(1004.0, running=4, waiting=0, kv_cache_usage=0.6, prefix_cache_queries=400,
               prefix_cache_hits=190, generation_tokens=70, preemptions=1),
        # nothing queried in this interval: no hit rate, not 0
        sample(1005.0, running=0, waiting=0, kv_cache_usage=0.0, prefix_cache_queries=400,
               prefix_cache_hits=190, generation_tokens=70, preemptions=1),
        # a restarted server: its counters went down, no delta
        sample(1006.0, running=0, waiting=0, kv_cache_usage=0.0, prefix_cache_queries=5,
               prefix_cache_hits=0, generation_tokens=1, preemptions=0),
    ]  # fmt: skip
    first, second, idle, restarted = series_rows(reversed(samples), origin)
    assert list(first) == list(COLUMNS), list(first)
    assert (first["t_s"], first["running"], first["waiting"]) == (2.0, 3, 1), first
    assert first["prefix_cache_hit_rate"] is None and first["prefix_cache_queries"] is None
    assert second["t_s"] == 4.0 and second["prefix_cache_queries"] == 300, second
    assert second["prefix_cache_hit_rate"] == 0.5, second
    assert second["generation_tokens_per_s"] == 30.0 and second["preemptions"] == 1, second
    assert second["mm_cache_hit_rate"] is None, second  # the page had no mm counters
    assert idle["prefix_cache_queries"] == 0 and idle["prefix_cache_hit_rate"] is None, idle
    assert idle["generation_tokens_per_s"] == 0.0, idle
    assert restarted["prefix_cache_hit_rate"] is None, restarted
    assert restarted["generation_tokens_per_s"] is None, restarted


def test_each_replica_is_its_own_series() -> None:
    samples = [
        sample(11.0, "1", prefix_cache_queries=10, prefix_cache_hits=0),
        sample(10.0, "0", prefix_cache_queries=10, prefix_cache_hits=0),
        sample(12.0, "0", prefix_cache_queries=20, prefix_cache_hits=10),
        sample(13.0, "1", prefix_cache_queries=30, prefix_cache_hits=5),
    ]
    rows = series_rows(samples, 10.0)
    assert [(r["replica"], r["t_s"]) for r in rows] == [
        ("0", 0.0), ("0", 2.0), ("1", 1.0), ("1", 3.0)
    ], rows  # fmt: skip
    assert [r["prefix_cache_hit_rate"] for r in rows] == [None, 1.0, None, 0.25], rows


def test_series_csv_round_trip_keeps_the_gaps(tmp_path: Path) -> None:
    rows = series_rows(
        [sample(1.0, prefix_cache_queries=1, prefix_cache_hits=1, running=2),
         sample(2.0, prefix_cache_queries=1, prefix_cache_hits=1, running=5)], 0.0
    )  # fmt: skip
    path = tmp_path / "server_series.csv"
    write_series(path, rows)
    back = read_series(path)
    assert [r["running"] for r in back] == [2.0, 5.0], back
    assert [r["prefix_cache_hit_rate"] for r in back] == [None, None], back
    assert back[0]["replica"] == "0" and back[0]["level"] == 4.0, back


def test_targets_of_one_server_and_of_a_replicas_deployment() -> None:
    assert targets("http://10.0.0.5:8000") == {"0": "http://10.0.0.5:8000/metrics"}
    replicas = load_config(CONFIGS / "cpu-tiny-2replicas.yaml")
    assert targets("http://127.0.0.1:8000", replicas) == {
        "0": "http://127.0.0.1:8001/metrics",
        "1": "http://127.0.0.1:8002/metrics",
    }
    # not its router: the page at the URL itself
    assert targets("http://127.0.0.1:9000", replicas) == {"0": "http://127.0.0.1:9000/metrics"}
    single = load_config(CONFIGS / "cpu-tiny.yaml")
    assert targets("http://127.0.0.1:8000", single) == {"0": "http://127.0.0.1:8000/metrics"}


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        ok = self.path == "/metrics"
        body = (PAGE if ok else "nope").encode()
        self.send_response(200 if ok else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def page_url() -> Iterator[str]:
    """A stand-in for vLLM's /metrics: the real page above (and a 500 elsewhere)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_sampler_samples_and_counts_failures_without_raising(page_url: str) -> None:
    sampler = Sampler({"0": f"{page_url}/metrics", "1": f"{page_url}/broken"}, interval_s=0.05)
    sampler.level = 2.0
    with sampler:
        deadline = time.monotonic() + 10
        while len(sampler.samples) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(sampler.samples) >= 3, sampler.report()
    assert {s.replica for s in sampler.samples} == {"0"}, sampler.samples[:2]
    assert all(s.level == 2.0 and s.values["running"] == 12.0 for s in sampler.samples)
    report = sampler.report()
    assert report["failures"]["1"] >= 3, report
    assert "HTTP 500" in report["last_error"] and "/broken" in report["last_error"], report
    assert report["scrapes"] == report["samples"] + report["failures"]["1"], report
    count = len(sampler.samples)
    time.sleep(0.2)
    assert len(sampler.samples) == count, "the sampler kept sampling after it was stopped"


def test_sampler_off_samples_nothing(page_url: str) -> None:
    with Sampler({"0": f"{page_url}/metrics"}, interval_s=0) as sampler:
        pass
    assert sampler.samples == [] and sampler.scrapes == 0, sampler.report()
