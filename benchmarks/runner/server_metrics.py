"""The server's side of a run: vLLM's /metrics sampled during the load, as time series.

`parse_page` reads one /metrics page (vLLM 0.32's names, summed over engines), `series_rows`
turns the samples of every target into rows on the run's time axis (seconds since the
run's start, the origin of the client-side series in timeline.py), and `Sampler` is the
thin thread that GETs each target every `interval_s`. A scrape that fails is counted, never
fatal: the load matters more than its sidelines.

Counters become per-interval deltas: a hit rate is the interval's hits over its queries,
and None (an empty CSV cell) when nothing was queried in the interval, or on the first
sample, or when a counter went down (the server restarted): never an invented 0.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from serve.config.deployment import DeploymentConfig

SERIES_FILE = "server_series.csv"
# vLLM 0.32 (vllm/v1/metrics/loggers.py) family -> our name. Gauges are read as they are;
# kv_cache_usage_perc is a fraction (0..1) despite its name.
GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
}
COUNTERS = {
    "vllm:prefix_cache_queries": "prefix_cache_queries",
    "vllm:prefix_cache_hits": "prefix_cache_hits",
    "vllm:mm_cache_queries": "mm_cache_queries",
    "vllm:mm_cache_hits": "mm_cache_hits",
    "vllm:num_preemptions": "preemptions",
    "vllm:prompt_tokens": "prompt_tokens",
    "vllm:generation_tokens": "generation_tokens",
    "vllm:request_success": "request_success",  # finished requests, any finish reason
}
# Hit rate columns: (rate, hits counter, queries counter)
HIT_RATES = (
    ("prefix_cache_hit_rate", "prefix_cache_hits", "prefix_cache_queries"),
    ("mm_cache_hit_rate", "mm_cache_hits", "mm_cache_queries"),
)
COLUMNS = (
    "t_s", "unix_s", "replica", "level", "running", "waiting", "kv_cache_usage",
    "prefix_cache_hit_rate", "prefix_cache_queries", "mm_cache_hit_rate", "mm_cache_queries",
    "preemptions", "prompt_tokens_per_s", "generation_tokens_per_s",
)  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One target's /metrics at one time: `unix_s` is time.time(), the records' clock."""

    unix_s: float
    replica: str
    level: float | None
    values: dict[str, float]


def parse_page(text: str) -> dict[str, float]:
    """The gauges and counters of a /metrics page, each summed over its label sets (engines;
    KV usage is their mean). A family the page lacks is left out. Raises ValueError on a
    page that is not Prometheus text."""
    sums: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in GAUGES:
            name, sample_name = GAUGES[family.name], family.name
        elif family.name in COUNTERS:
            name, sample_name = COUNTERS[family.name], f"{family.name}_total"
        else:
            continue
        for sample in family.samples:
            if sample.name == sample_name:
                sums.setdefault(name, []).append(sample.value)
    out = {name: sum(values) for name, values in sums.items()}
    if usage := sums.get("kv_cache_usage"):
        out["kv_cache_usage"] = sum(usage) / len(usage)
    return out


def series_rows(samples: Iterable[Sample], origin_unix_s: float) -> list[dict[str, Any]]:
    """One row per sample (columns COLUMNS), by replica then time; `t_s` counts from the
    run's start. Counter columns hold the change since the replica's previous sample."""
    by_replica: dict[str, list[Sample]] = {}
    for s in samples:
        by_replica.setdefault(s.replica, []).append(s)
    rows = []
    for replica in sorted(by_replica):
        prev: Sample | None = None
        for s in sorted(by_replica[replica], key=lambda x: x.unix_s):
            row: dict[str, Any] = dict.fromkeys(COLUMNS)
            row.update(
                t_s=round(s.unix_s - origin_unix_s, 3),
                unix_s=round(s.unix_s, 3),
                replica=replica,
                level=s.level,
                running=s.values.get("running"),
                waiting=s.values.get("waiting"),
                kv_cache_usage=s.values.get("kv_cache_usage"),
            )
            if prev is not None:
                delta = counter_deltas(prev, s)
                dt = s.unix_s - prev.unix_s
                for rate, hits, queries in HIT_RATES:
                    q = delta.get(queries)
                    row[queries] = q
                    if q and hits in delta:
                        row[rate] = round(delta[hits] / q, 4)
                row["preemptions"] = delta.get("preemptions")
                for tokens in ("prompt_tokens", "generation_tokens"):
                    if tokens in delta and dt > 0:
                        row[f"{tokens}_per_s"] = round(delta[tokens] / dt, 2)
            rows.append(row)
            prev = s
    return rows


def counter_deltas(before: Sample, after: Sample) -> dict[str, float]:
    """Each counter's increase between two samples of one target; a counter that went
    down (a restarted server) or is missing from either is left out."""
    out = {}
    for name in COUNTERS.values():
        a, b = before.values.get(name), after.values.get(name)
        if a is not None and b is not None and b >= a:
            out[name] = b - a
    return out


def cache_totals(before: str, after: str) -> dict[str, Any]:
    """vLLM's prefix-cache and processed-image-cache counters over a run, from the /metrics
    pages before and after it: queries, hits and hit rate of each (tokens for the prefix
    cache, images for the processed-image cache); {} when a page is missing or unreadable
    (the run's own probe request comes before `before`)."""
    try:
        first, last = parse_page(before), parse_page(after)
    except ValueError:
        return {}
    if not first or not last:
        return {}
    delta = counter_deltas(Sample(0.0, "0", None, first), Sample(1.0, "0", None, last))
    out: dict[str, Any] = {}
    for rate, hits, queries in HIT_RATES:
        if queries in delta and hits in delta:
            q, h = delta[queries], delta[hits]
            name = rate.removesuffix("_hit_rate")
            out[name] = {"queries": q, "hits": h, "hit_rate": round(h / q, 4) if q else None}
    return out


def write_series(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """The rows as CSV; None is an empty cell."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def read_series(path: Path) -> list[dict[str, Any]]:
    """A series CSV back: numbers as floats, empty cells as None, `replica` as text."""
    with path.open(newline="") as f:
        return [
            {k: v if k == "replica" else (float(v) if v != "" else None) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def targets(root_url: str, cfg: DeploymentConfig | None = None) -> dict[str, str]:
    """replica label -> /metrics URL. A replicas deployment (`cfg`) reached at its router's
    port: every replica's page, labelled by index as serve.monitor.scrape labels them (the
    router's own page has none of vLLM's series). Otherwise the page at `root_url`, "0"."""
    from serve.command.replicas import REPLICA_HOST, ports

    parts = urlsplit(root_url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if cfg is None or cfg.replicas is None or not local or parts.port != cfg.port:
        return {"0": f"{root_url.rstrip('/')}/metrics"}
    return {
        str(i): f"{parts.scheme}://{REPLICA_HOST}:{port}/metrics"
        for i, port in enumerate(ports(cfg).replicas)
    }


@dataclass
class Sampler:
    """A thread that samples every target every `interval_s` until stopped. Set `level` to
    the level running (the rows carry it); `interval_s` 0 samples nothing. No API key is
    sent: /metrics needs none (serve.monitor.scrape says why)."""

    urls: dict[str, str]
    interval_s: float = 1.0
    timeout_s: float = 2.0
    level: float | None = None
    samples: list[Sample] = field(default_factory=list, init=False)
    scrapes: int = field(default=0, init=False)
    failures: dict[str, int] = field(default_factory=dict, init=False)
    last_error: str = field(default="", init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def __enter__(self) -> Sampler:
        if self.interval_s <= 0:
            return self  # sampling turned off
        self._thread = threading.Thread(target=self._run, name="server-metrics", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s * len(self.urls) + 5)

    def _run(self) -> None:
        # TLS replicas are reached by a loopback address their certificate need not name
        with httpx.Client(timeout=self.timeout_s, verify=False) as client:
            while True:
                started = time.monotonic()
                for replica, url in self.urls.items():
                    self.sample(client, replica, url)
                if self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started))):
                    return

    def sample(self, client: httpx.Client, replica: str, url: str) -> None:
        """One scrape of one target: a sample, or a counted failure."""
        self.scrapes += 1
        level = self.level
        try:
            resp = client.get(url)
            if resp.status_code != 200:
                raise ValueError(f"HTTP {resp.status_code}")
            values = parse_page(resp.text)
            if not values:
                raise ValueError("the page has none of vLLM's series")
        except (httpx.HTTPError, ValueError) as exc:
            self.failures[replica] = self.failures.get(replica, 0) + 1
            why = (str(exc).splitlines() or [""])[0]
            if isinstance(exc, httpx.HTTPError):  # e.g. ConnectError: [Errno 111] ...
                why = f"{type(exc).__name__}: {why}"
            self.last_error = f"{url}: {why}"[:300]
            return
        self.samples.append(Sample(time.time(), replica, level, values))

    def report(self) -> dict[str, Any]:
        """What summary.json keeps about the sampling."""
        return {
            "interval_s": self.interval_s,
            "targets": self.urls,
            "scrapes": self.scrapes,
            "samples": len(self.samples),
            "failures": dict(self.failures),
            "last_error": self.last_error or None,
        }
