"""Each replica's prefix-cache counters: vLLM's prefix-cache queries and hits (tokens) and
finished requests, read from its /metrics page with the runner's parser
(benchmarks.runner.server_metrics); their deltas over a round give its hit rate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.runner import preflight
from benchmarks.runner.errors import BenchError
from benchmarks.runner.server_metrics import parse_page

if TYPE_CHECKING:
    from serve.launch.server import ServerProcess


@dataclass(frozen=True)
class CacheCounters:
    """One replica's vLLM counters: prefix-cache queries and hits (tokens), finished requests."""

    queries: float = 0.0
    hits: float = 0.0
    requests: float = 0.0

    def __sub__(self, other: CacheCounters) -> CacheCounters:
        return CacheCounters(
            self.queries - other.queries, self.hits - other.hits, self.requests - other.requests
        )

    def __add__(self, other: CacheCounters) -> CacheCounters:
        return CacheCounters(
            self.queries + other.queries, self.hits + other.hits, self.requests + other.requests
        )

    @property
    def hit_rate(self) -> float | None:
        """Hit tokens over queried tokens; None when nothing was queried."""
        return self.hits / self.queries if self.queries > 0 else None


def cache_counters(metrics_text: str) -> CacheCounters:
    """The prefix-cache and finished-request counters of a vLLM /metrics page, summed over
    engines and labels. Raises ValueError if the page has no prefix-cache counters."""
    values = parse_page(metrics_text)
    if "prefix_cache_queries" not in values:
        raise ValueError(
            "no vllm:prefix_cache_queries_total on /metrics: not a vLLM server, or a vLLM "
            "that names its prefix-cache counters differently"
        )
    return CacheCounters(
        queries=values["prefix_cache_queries"],
        hits=values.get("prefix_cache_hits", 0.0),
        requests=values.get("request_success", 0.0),
    )


def total(counters: Sequence[CacheCounters]) -> CacheCounters:
    out = CacheCounters()
    for c in counters:
        out = out + c
    return out


def replica_counters(servers: Sequence[ServerProcess]) -> list[CacheCounters]:
    """Every replica's counters now. Raises BenchError if one has no /metrics to read."""
    out = []
    for i, s in enumerate(servers):
        text = preflight.snapshot(f"{s.root_url}/metrics")
        if text is None:
            raise BenchError(f"replica {i} ({s.root_url}) did not answer /metrics")
        try:
            out.append(cache_counters(text))
        except ValueError as exc:
            raise BenchError(f"replica {i} ({s.root_url}): {exc}") from None
    return out
