"""What a rollout reads of vllm-router's view of a replica it put back, and when it takes
the next one out (serve.launch.rejoin): pure, no router. The texts below are the shapes
vllm-router 0.1.17 answers (GET /workers, its metrics port), seen against stub replicas;
the same reads against the real router are in tests/unit/serve/launch/test_rollout.py."""

from __future__ import annotations

import pytest

from serve.launch.rejoin import (
    Rejoin,
    RouterView,
    not_serving_line,
    rejoin_state,
    seen,
    serving_line,
    successes,
    worker_health,
)

A, B = "http://127.0.0.1:8001", "http://127.0.0.1:8002"

WORKERS = {
    "workers": [
        {"url": A, "model_id": "unknown", "is_healthy": True, "load": 0, "priority": 50},
        {"url": B, "model_id": "unknown", "is_healthy": False, "load": 0, "priority": 50},
    ],
    "total": 2,
    "stats": {"prefill_count": 0, "decode_count": 0, "regular_count": 2},
}

METRICS = f"""# HELP vllm_router_cb_outcomes_total Circuit breaker outcomes
# TYPE vllm_router_cb_outcomes_total counter
vllm_router_cb_outcomes_total{{worker="{A}",outcome="success"}} 12
vllm_router_cb_outcomes_total{{worker="{A}",outcome="failure"}} 3
vllm_router_cb_outcomes_total{{outcome="success",worker="{B}"}} 4.0
vllm_router_processed_requests_total{{worker="{A}"}} 99
vllm_router_cb_state{{worker="{A}"}} 0
vllm_router_active_workers 2
"""


def test_worker_health_reads_each_listed_workers_is_healthy() -> None:
    assert worker_health(WORKERS) == {A: True, B: False}
    # Not the shape vllm-router answers: nothing listed, so nothing counts as healthy.
    assert worker_health({"urls": [A]}) == {}
    assert worker_health([A]) == {}
    assert worker_health({"workers": [{"url": A, "is_healthy": "yes"}, {"is_healthy": True}]}) == {
        A: False
    }


def test_successes_are_the_answered_requests_per_worker() -> None:
    assert successes(METRICS) == {A: 12.0, B: 4.0}
    assert successes("") == {}
    assert successes(f'vllm_router_cb_outcomes_total{{worker="{A}",outcome="success"}} x') == {}


def view(health: dict[str, bool], answered: dict[str, float]) -> RouterView:
    return RouterView(health, answered)


ADDED = view({B: True}, {A: 10, B: 50})  # A's counter is what its previous process answered


@pytest.mark.parametrize(
    ("now", "waited_s", "state"),
    [
        # Listed healthy and a request through it answered since it went back in.
        (view({A: True, B: True}, {A: 11, B: 60}), 0.5, Rejoin.SERVING),
        # Healthy, but the others answered requests and it none yet: wait.
        (view({A: True, B: True}, {A: 10, B: 60}), 5, Rejoin.WAITING),
        # No request through any replica (no traffic) for quiet_s: nothing can fail.
        (view({A: True, B: True}, {A: 10, B: 50}), 1, Rejoin.WAITING),
        (view({A: True, B: True}, {A: 10, B: 50}), 10, Rejoin.IDLE),
        # Answered requests, but the router has since marked it unhealthy: not serving.
        (view({A: False, B: True}, {A: 20, B: 60}), 5, Rejoin.WAITING),
        # Not listed (the router restarted and does not know it): never serving.
        (view({B: True}, {B: 50}), 10, Rejoin.WAITING),
        (view({A: True, B: True}, {A: 10, B: 60}), 30, Rejoin.TIMED_OUT),
        (view({}, {}), 30, Rejoin.TIMED_OUT),  # the router does not answer
        # The router restarted (its counters start again from 0): what it counts is new.
        (view({A: True, B: True}, {A: 2, B: 1}), 1, Rejoin.SERVING),
        (view({A: True, B: True}, {B: 1}), 10, Rejoin.WAITING),
    ],
)
def test_the_next_replica_leaves_only_once_the_one_put_back_serves(
    now: RouterView, waited_s: float, state: Rejoin
) -> None:
    assert rejoin_state(A, ADDED, now, waited_s, quiet_s=10, timeout_s=30) is state


def test_what_the_rollout_says_of_the_router_view() -> None:
    now = view({A: True, B: True}, {A: 13, B: 57})
    said = seen(A, ADDED, now)
    assert said == "healthy, 3 requests answered through it, 7 through the others"
    assert seen(A, ADDED, view({B: True}, {B: 50})) == (
        "not listed by GET /workers, 0 requests answered through it, 0 through the others"
    )
    assert seen(A, ADDED, view({A: False}, {A: 3, B: 52})) == (
        "unhealthy, 3 requests answered through it, 2 through the others"
    )
    assert serving_line(0, Rejoin.SERVING, 1.24, said) == (
        f"replica 0: serving through the router after 1.2 s ({said})"
    )
    assert serving_line(1, Rejoin.IDLE, 10.0, said).startswith(
        "replica 1: healthy in the router after 10.0 s ("
    )
    line = not_serving_line(0, A, 120.4, said)
    assert line.startswith(
        "error: replica 0 is back in vllm-router but did not serve through it within 120 s "
        f"(router: {said}); no further replica leaves the router"
    ), line
    assert line.endswith(f"show its view of {A}") and "\n" not in line, line
