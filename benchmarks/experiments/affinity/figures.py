"""The affinity experiment's figures (pure): per round and policy, the follow-up and
first-turn TTFT and each replica's prefix-cache hit rate and requests; per policy, the
median over its rounds and its follow-up TTFT over the reference policy's, round by round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.experiments.affinity.conversation import TurnRecord
from benchmarks.experiments.affinity.counters import CacheCounters, total
from benchmarks.runner.metrics import percentile, spread

REFERENCE = "round_robin"  # the policy the others are compared with, round by round


@dataclass
class RoundResult:
    """One round of one policy: its requests, each replica's counter deltas, the machine."""

    round: int
    policy: str
    turns: list[TurnRecord]
    replicas: list[CacheCounters]  # deltas over the round, by replica index
    machine: dict[str, Any] = field(default_factory=dict)


def ttfts_ms(turns: Sequence[TurnRecord], follow_up: bool) -> list[float]:
    """TTFT (ms) of the successful follow-up turns, or of the first turns."""
    return [
        t.record.ttft_s * 1000
        for t in turns
        if t.record.success and t.record.ttft_s is not None and (t.turn > 1) == follow_up
    ]


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def round_figures(result: RoundResult) -> dict[str, Any]:
    """One round's figures: follow-up and first-turn TTFT, hit rates, requests."""
    follow, first = ttfts_ms(result.turns, True), ttfts_ms(result.turns, False)
    return {
        "round": result.round,
        "policy": result.policy,
        "requests": len(result.turns),
        "failed": sum(1 for t in result.turns if not t.record.success),
        "followup_ttft_p50_ms": rounded(percentile(follow, 50)),
        "followup_ttft_p90_ms": rounded(percentile(follow, 90)),
        "first_ttft_p50_ms": rounded(percentile(first, 50)),
        "hit_rate": [rounded(c.hit_rate, 4) for c in result.replicas],
        "hit_rate_all": rounded(total(result.replicas).hit_rate, 4),
        "replica_requests": [int(c.requests) for c in result.replicas],
        "replica_hit_tokens": [int(c.hits) for c in result.replicas],
        "replica_queried_tokens": [int(c.queries) for c in result.replicas],
        "loadavg_1m": result.machine.get("loadavg", [None])[0],
    }


def summarise(results: Sequence[RoundResult], reference: str = REFERENCE) -> dict[str, Any]:
    """Per policy: the median, min and max over its rounds of the follow-up TTFT p50 and
    p90 and the first-turn TTFT p50; the follow-up p50 over the reference policy's in the
    same round; and each replica's hit rate and requests over all its rounds."""
    rows = [round_figures(r) for r in results]
    ref = {r["round"]: r["followup_ttft_p50_ms"] for r in rows if r["policy"] == reference}
    out: dict[str, Any] = {}
    for policy in dict.fromkeys(r.policy for r in results):
        mine = [r for r in rows if r["policy"] == policy]
        deltas = [r.replicas for r in results if r.policy == policy]
        per_replica = [total(column) for column in zip(*deltas, strict=True)]
        ratios = [
            r["followup_ttft_p50_ms"] / ref[r["round"]]
            if r["followup_ttft_p50_ms"] is not None and ref.get(r["round"])
            else None
            for r in mine
        ]
        out[policy] = {
            "rounds": len(mine),
            "requests": sum(r["requests"] for r in mine),
            "failed": sum(r["failed"] for r in mine),
            "followup_ttft_p50_ms": spread([r["followup_ttft_p50_ms"] for r in mine]),
            "followup_ttft_p90_ms": spread([r["followup_ttft_p90_ms"] for r in mine]),
            "first_ttft_p50_ms": spread([r["first_ttft_p50_ms"] for r in mine]),
            f"followup_p50_vs_{reference}": spread(ratios),
            "hit_rate": [rounded(c.hit_rate, 4) for c in per_replica],
            "hit_rate_all": rounded(total(per_replica).hit_rate, 4),
            "replica_requests": [int(c.requests) for c in per_replica],
            "replica_hit_tokens": [int(c.hits) for c in per_replica],
            "replica_queried_tokens": [int(c.queries) for c in per_replica],
        }
    return out
