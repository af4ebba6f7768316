"""Whether a replica the rollout put back into vllm-router serves through it (pure).

vllm-router adds a worker on POST /add_worker once the worker's /health answers, and
marks it healthy from the start; that it then receives and answers requests is another
matter. Before the rollout takes the next replica out, it reads the router's own view of
the one it put back (serve.launch.fleet): GET /workers (each worker's `is_healthy`) and
the Prometheus counter `vllm_router_cb_outcomes_total{worker=URL,outcome="success"}` on
the router's metrics port (requests the router sent to that replica and got an answer
for: 2xx or 4xx, not 5xx or a failed connection). These functions read those answers and
decide; checked against vllm-router 0.1.17 (tests/e2e/test_replicas.py).

The replica serves once the router lists it healthy and its success counter has risen
since it was added. A deployment with no traffic at all (no replica's counter rises)
cannot show that: there, the router listing it healthy for `quiet_s` is enough, as no
request can fail when the next one leaves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

SUCCESS_METRIC = "vllm_router_cb_outcomes_total"
# How long the rollout waits for a replica it put back to serve through the router.
REJOIN_TIMEOUT_S = 120.0
# No request answered through any replica for this long after a put-back: no traffic.
REJOIN_QUIET_S = 10.0
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[A-Za-z_][A-Za-z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


def worker_health(workers: object) -> dict[str, bool]:
    """Each worker's URL -> `is_healthy`, from the JSON of vllm-router's GET /workers
    (`{"workers": [{"url": ..., "is_healthy": ...}, ...], ...}`); {} for anything else."""
    if not isinstance(workers, Mapping) or not isinstance(workers.get("workers"), list):
        return {}
    return {
        w["url"]: w.get("is_healthy") is True
        for w in workers["workers"]
        if isinstance(w, Mapping) and isinstance(w.get("url"), str)
    }


def successes(metrics: str) -> dict[str, float]:
    """Each worker's URL -> the requests the router got an answer for from it
    (vllm_router_cb_outcomes_total with outcome="success"), from the router's /metrics."""
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        m = _SAMPLE.match(line)
        if m is None or m["name"] != SUCCESS_METRIC:
            continue
        labels = {x["key"]: x["value"] for x in _LABEL.finditer(m["labels"])}
        if labels.get("outcome") != "success" or "worker" not in labels:
            continue
        try:
            value = float(m["value"])
        except ValueError:
            continue
        counts[labels["worker"]] = counts.get(labels["worker"], 0.0) + value
    return counts


@dataclass(frozen=True)
class RouterView:
    """What the router says about the replicas at one moment: health per listed worker,
    answered requests per worker."""

    health: Mapping[str, bool]
    answered: Mapping[str, float]


def answered_since(url: str, added: RouterView, now: RouterView) -> float:
    """Requests the router got an answer for from `url` between two views; a counter lower
    than before was reset (the router restarted), so all of it is new."""
    before, after = added.answered.get(url, 0.0), now.answered.get(url, 0.0)
    return after - before if after >= before else after


def others_since(url: str, added: RouterView, now: RouterView) -> float:
    """The same for every other replica the router counts."""
    return sum(answered_since(u, added, now) for u in now.answered if u != url)


class Rejoin(Enum):
    """Where a put-back replica stands."""

    SERVING = "serving"  # healthy in the router, and requests through it answered
    IDLE = "idle"  # healthy in the router, and no request through any replica: no traffic
    WAITING = "waiting"
    TIMED_OUT = "timed out"


def rejoin_state(
    url: str,
    added: RouterView,
    now: RouterView,
    waited_s: float,
    *,
    quiet_s: float,
    timeout_s: float = REJOIN_TIMEOUT_S,
) -> Rejoin:
    """Whether the replica at `url`, put back when the router showed `added`, serves
    through the router as it shows `now`, `waited_s` later."""
    healthy = now.health.get(url, False)
    mine = answered_since(url, added, now)
    if healthy and mine > 0:
        return Rejoin.SERVING
    if healthy and mine + others_since(url, added, now) == 0 and waited_s >= quiet_s:
        return Rejoin.IDLE
    if waited_s >= timeout_s:
        return Rejoin.TIMED_OUT
    return Rejoin.WAITING


def seen(url: str, added: RouterView, now: RouterView) -> str:
    """The router's view of `url` in words, for the lines the rollout says."""
    if url not in now.health:
        state = "not listed by GET /workers"
    else:
        state = "healthy" if now.health[url] else "unhealthy"
    mine, others = answered_since(url, added, now), others_since(url, added, now)
    return f"{state}, {mine:.0f} requests answered through it, {others:.0f} through the others"


def not_serving_line(replica: int, url: str, waited_s: float, view: str) -> str:
    """A replica put back that never served through the router: the rollout stops there."""
    return (
        f"error: replica {replica} is back in vllm-router but did not serve through it within "
        f"{waited_s:.0f} s (router: {view}); no further replica leaves the router, so that it "
        f"keeps one to send requests to; GET /workers and {SUCCESS_METRIC} on the router's "
        f"metrics port show its view of {url}"
    )


def serving_line(replica: int, state: Rejoin, waited_s: float, view: str) -> str:
    how = "serving through the router" if state is Rejoin.SERVING else "healthy in the router"
    return f"replica {replica}: {how} after {waited_s:.1f} s ({view})"
