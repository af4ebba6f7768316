"""Per-service rate limits: token buckets, as pure arithmetic, and the table of buckets.

Each limited service has a bucket per limit that holds up to one minute's worth
(`per_minute`) and refills continuously at `per_minute / 60` per second: a service may
burst up to its minute's budget, then gets its steady rate.

- requests per minute: each request takes 1 at admission; with less than 1 left it is
  refused (429) with the seconds until 1 is back (`Retry-After`);
- tokens per minute: a request's tokens are known only once vLLM has tokenized its prompt
  and images and generated its answer, so they are charged when the response ends, from
  the response's `usage` (prompt + completion tokens; `max_tokens` when a stream reported
  no usage), and the bucket may go below zero. A request is admitted while the bucket is
  above zero; below, it is refused until the refill brings it back. A service can thus
  overshoot its minute by what its requests in flight cost, and no more.

Buckets live in the edge's memory (one process): a restart gives every service a full
minute again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    """`level` units available at time `at` (seconds, monotonic)."""

    level: float
    at: float


def refilled(bucket: Bucket | None, now: float, per_minute: int) -> float:
    """The bucket's level at `now`: full when new, refilled at per_minute/60 per second,
    never above per_minute."""
    if bucket is None:
        return float(per_minute)
    return min(float(per_minute), bucket.level + (now - bucket.at) * per_minute / 60.0)


def take(
    bucket: Bucket | None, now: float, per_minute: int, cost: float = 1.0
) -> tuple[Bucket, float]:
    """Take `cost` if the bucket holds it: (new bucket, 0). Else (bucket, seconds until
    it will)."""
    level = refilled(bucket, now, per_minute)
    if level >= cost:
        return Bucket(level - cost, now), 0.0
    return Bucket(level, now), (cost - level) * 60.0 / per_minute


def in_credit(bucket: Bucket | None, now: float, per_minute: int) -> float:
    """0 if the bucket is above zero at `now`, else the seconds until it will be."""
    level = refilled(bucket, now, per_minute)
    return 0.0 if level > 0 else (-level) * 60.0 / per_minute + 1e-6


def charge(bucket: Bucket | None, now: float, per_minute: int, cost: float) -> Bucket:
    """Charge `cost` after the fact; the level may go below zero."""
    return Bucket(refilled(bucket, now, per_minute) - cost, now)


def retry_after(wait_s: float) -> int:
    """Whole seconds for a Retry-After header: rounded up, at least 1."""
    return max(1, math.ceil(wait_s))


def over_limit_message(
    service: str, requests_per_minute: int | None, tokens_per_minute: int | None, wait_s: float
) -> str:
    """What a service over its limits is told (pure), naming the limit it is over."""
    which = "requests or tokens"
    if requests_per_minute is None:
        which = "tokens"
    elif tokens_per_minute is None:
        which = "requests"
    return (
        f"service {service!r} is over its {which} per minute (requests_per_minute "
        f"{requests_per_minute}, tokens_per_minute {tokens_per_minute}); retry after "
        f"{retry_after(wait_s)} s"
    )


class Limiter:
    """The buckets of every service (requests, tokens), keyed by service name; the limits
    come with each call, so a reloaded keys file applies its new limits at once."""

    def __init__(self) -> None:
        self.requests: dict[str, Bucket] = {}
        self.tokens: dict[str, Bucket] = {}

    def admit(
        self,
        service: str,
        now: float,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
    ) -> float:
        """0 to admit one request of `service` now (its request is counted), else the
        seconds it should wait."""
        if tokens_per_minute is not None:
            wait = in_credit(self.tokens.get(service), now, tokens_per_minute)
            if wait > 0:
                return wait
        if requests_per_minute is not None:
            bucket, wait = take(self.requests.get(service), now, requests_per_minute)
            self.requests[service] = bucket
            return wait
        return 0.0

    def spent(self, service: str, now: float, tokens: int, tokens_per_minute: int | None) -> None:
        """Charge the tokens a finished request of `service` used."""
        if tokens_per_minute is not None and tokens > 0:
            self.tokens[service] = charge(self.tokens.get(service), now, tokens_per_minute, tokens)
