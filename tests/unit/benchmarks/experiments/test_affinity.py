"""The affinity experiment's pure parts without a server: vLLM's prefix-cache counters read from a
/metrics page, the conversation's turns, the per-round and per-policy figures, the routers'
configs (checked by vllm-router's own parser), and the one-line errors for input it refuses
before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from benchmarks.__main__ import main
from benchmarks.experiments.affinity import run
from benchmarks.experiments.affinity.conversation import (
    QUESTIONS,
    TurnRecord,
    send_params,
    turn_messages,
)
from benchmarks.experiments.affinity.counters import CacheCounters, cache_counters
from benchmarks.experiments.affinity.figures import RoundResult, round_figures, summarise
from benchmarks.experiments.affinity.fleet import policy_config, session_workers
from benchmarks.experiments.affinity.tables import round_cells, summary_cells
from benchmarks.runner.records import RequestRecord
from benchmarks.runner.scenario import load_scenario
from clients.messages import RADIOLOGIST, count_images
from serve.command.replicas import check_router_argv, router_argv
from serve.config.deployment import load_config
from tests.conftest import REPO

REPO = REPO
SCENARIO = REPO / "configs" / "scenarios" / "bench-affinity.yaml"
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def vllm_metrics(queries: dict[str, float], hits: dict[str, float], done: float) -> str:
    """A /metrics page as vLLM 0.32 writes these counters (prometheus_client, labels
    model_name and engine), with one engine per key, plus a gauge that must be ignored."""
    reg = CollectorRegistry()
    labels = ["model_name", "engine"]
    q = Counter("vllm:prefix_cache_queries", "queried tokens", labels, registry=reg)
    h = Counter("vllm:prefix_cache_hits", "cached tokens", labels, registry=reg)
    ok = Counter("vllm:request_success", "finished", [*labels, "finished_reason"], registry=reg)
    g = Gauge("vllm:num_requests_running", "running", labels, registry=reg)
    for engine, n in queries.items():
        q.labels("m", engine).inc(n)
        h.labels("m", engine).inc(hits[engine])
        g.labels("m", engine).set(99)
    ok.labels("m", "0", "length").inc(done)
    ok.labels("m", "0", "stop").inc(1)
    return generate_latest(reg).decode()


def test_counters_are_summed_over_engines_and_labels() -> None:
    text = vllm_metrics({"0": 300, "1": 100}, {"0": 256, "1": 0}, done=7)
    assert cache_counters(text) == CacheCounters(queries=400, hits=256, requests=8)


def test_a_page_without_prefix_cache_counters_is_named() -> None:
    with pytest.raises(ValueError, match="no vllm:prefix_cache_queries_total"):
        cache_counters("# TYPE up gauge\nup 1\n")


def test_deltas_and_hit_rate() -> None:
    before = cache_counters(vllm_metrics({"0": 100}, {"0": 0}, done=1))
    after = cache_counters(vllm_metrics({"0": 500}, {"0": 300}, done=5))
    delta = after - before
    assert delta == CacheCounters(queries=400, hits=300, requests=4)
    assert delta.hit_rate == 0.75
    assert CacheCounters().hit_rate is None  # nothing queried: no rate, not 0


def test_each_turn_is_the_conversation_so_far_plus_the_next_question() -> None:
    first = turn_messages(IMAGE, [])
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[0]["content"] == RADIOLOGIST
    assert first[1]["content"] == [{"type": "text", "text": QUESTIONS[0]}, IMAGE]
    replies = ["a", "b", "c"]
    previous = first
    for k in range(1, len(QUESTIONS)):
        turn = turn_messages(IMAGE, replies[:k])
        assert turn[: len(previous)] == previous, f"turn {k + 1} does not extend turn {k}"
        assert turn[len(previous)] == {"role": "assistant", "content": replies[k - 1]}
        assert turn[-1] == {"role": "user", "content": [{"type": "text", "text": QUESTIONS[k]}]}
        assert count_images(turn) == 1, "the image stays in turn 1 only"
        previous = turn
    with pytest.raises(ValueError, match="4 turns"):
        turn_messages(IMAGE, ["a", "b", "c", "d"])


def turn(policy: str, rnd: int, conv: int, n: int, ttft: float | None, ok: bool = True):
    record = RequestRecord(
        start_s=0.0, success=ok, ttft_s=ttft, latency_s=1.0, error="" if ok else "HTTP 500: x"
    )
    return TurnRecord(policy, rnd, conv, n, record)


def a_round(policy: str, rnd: int, first: float, follow: list[float], hits: list[float]):
    turns = [turn(policy, rnd, 0, 1, first)]
    turns += [turn(policy, rnd, 0, i + 2, t) for i, t in enumerate(follow)]
    replicas = [CacheCounters(queries=100, hits=h, requests=2) for h in hits]
    return RoundResult(rnd, policy, turns, replicas, {"loadavg": [1.5, 1.0, 1.0]})


def test_round_figures_split_first_turns_from_follow_ups() -> None:
    r = a_round("round_robin", 1, 2.0, [0.1, 0.2, 0.3], [50, 0])
    r.turns.append(turn("round_robin", 1, 1, 1, None, ok=False))
    row = round_figures(r)
    assert row["followup_ttft_p50_ms"] == 200.0
    assert row["followup_ttft_p90_ms"] == 280.0  # numpy's linear interpolation
    assert row["first_ttft_p50_ms"] == 2000.0  # the failed first turn is left out
    assert (row["hit_rate"], row["hit_rate_all"]) == ([0.5, 0.0], 0.25)
    assert (row["replica_requests"], row["failed"], row["requests"]) == ([2, 2], 1, 5)
    assert round_cells(row) == [
        "1", "round_robin", "200", "280", "2,000", "50% / 0%", "25%", "2 / 2", "1/5", "1.50",
    ]  # fmt: skip


def test_summary_takes_medians_of_rounds_and_ratios_within_each_round() -> None:
    results = [
        a_round("round_robin", 1, 1.0, [0.4, 0.4, 0.4], [0, 0]),
        a_round("consistent_hash", 1, 1.0, [0.1, 0.1, 0.1], [80, 40]),
        a_round("round_robin", 2, 1.0, [0.8, 0.8, 0.8], [20, 20]),
        a_round("consistent_hash", 2, 1.0, [0.4, 0.4, 0.4], [90, 50]),
        a_round("round_robin", 3, 1.0, [0.5, 0.5, 0.5], [0, 10]),
        a_round("consistent_hash", 3, 1.2, [0.3, 0.3, 0.3], [70, 60]),
    ]
    s = summarise(results)
    assert list(s) == ["round_robin", "consistent_hash"]
    ch = s["consistent_hash"]
    assert ch["followup_ttft_p50_ms"] == {"median": 300.0, "min": 100.0, "max": 400.0, "rounds": 3}
    # within each round: 100/400, 400/800, 300/500
    assert ch["followup_p50_vs_round_robin"]["median"] == 0.5
    assert ch["followup_p50_vs_round_robin"]["min"] == 0.25
    assert ch["first_ttft_p50_ms"]["median"] == 1000.0
    # hit rates over all the policy's rounds: (80+90+70)/300, (40+50+60)/300
    assert ch["hit_rate"] == [0.8, 0.5] and ch["hit_rate_all"] == 0.65
    assert ch["replica_requests"] == [6, 6]
    assert (ch["replica_hit_tokens"], ch["replica_queried_tokens"]) == ([240, 150], [300, 300])
    assert s["round_robin"]["followup_p50_vs_round_robin"]["median"] == 1.0
    cells = summary_cells("consistent_hash", ch)
    assert cells[1] == "300 (100-400)" and cells[4] == "0.50x (0.25-0.60)"
    assert cells[5:8] == ["80% / 50%", "65%", "6 / 6"]
    assert summary_cells("round_robin", s["round_robin"])[4] == "-"


def test_session_keyed_routes_are_read_from_the_router_log() -> None:
    log = "\n".join(
        [
            "2026-11-30T03:00:00Z  INFO vllm_router_rs::policies::consistent_hash: Consistent "
            "hash routing: key='header:x-session-id:7-1-0' -> worker='http://127.0.0.1:9001' "
            "(index=0)",
            "... Consistent hash routing: key='header:x-session-id:7-1-0' -> "
            "worker='http://127.0.0.1:9001' (index=0)",
            "... Consistent hash routing: key='header:x-session-id:7-1-1' -> "
            "worker='http://127.0.0.1:9002' (index=1)",
            "... Consistent hash routing: key='request_hash:00ff' -> worker='http://x' (index=0)",
        ]
    )
    assert session_workers(log) == {
        "7-1-0": {"http://127.0.0.1:9001"},
        "7-1-1": {"http://127.0.0.1:9002"},
    }


@pytest.mark.parametrize("policy", run.POLICIES)
def test_each_router_differs_from_the_deployments_only_in_policy_and_ports(policy: str) -> None:
    cfg = load_config(REPO / "configs" / "deployments" / "cpu-tiny-2replicas.yaml")
    other = policy_config(cfg, policy, 18100, 18101)
    argv = router_argv(other, ["http://127.0.0.1:18001", "http://127.0.0.1:18002"])
    assert check_router_argv(argv) is None, argv
    assert argv[argv.index("--policy") + 1] == policy
    assert (
        argv[argv.index("--port") + 1] == "18102"
    )  # its own port: metrics + 1 (the edge's is cfg.port)
    assert argv[argv.index("--prometheus-port") + 1] == "18101"
    assert other.router.health_check == cfg.router.health_check
    assert cfg.router.policy == "round_robin" and cfg.port == 8000  # the original is untouched


def test_fixed_output_is_sent_as_the_runners_body_fields() -> None:
    scenario = load_scenario(SCENARIO)
    assert send_params(scenario, "m") == {
        "max_tokens": 32,
        "temperature": 0.0,
        "extra_body": {"ignore_eos": True, "min_tokens": 32},
    }
    natural = load_scenario(SCENARIO, ["fixed_output=false"])
    assert send_params(natural, "m") == {"max_tokens": 32, "temperature": 0.0}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--set", "deployment=configs/deployments/cpu-tiny.yaml"],
            "a `replicas:` section of count 2",
        ),
        (["--set", "load.users=[1,4]"], "one closed-loop level: load.users: [N]"),
        (["--rounds", "0"], "--rounds and --conversations must be at least 1"),
        (["--policies", "round_robin", "round_robin"], "names a policy twice"),
    ],
)
def test_bad_input_is_one_line_before_anything_starts(
    args: list[str],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(REPO)

    def no_fleet(*_: object) -> None:
        raise AssertionError("the fleet was started")

    monkeypatch.setattr(run, "fleet", no_fleet)
    code = main(["affinity", *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code in (1, 2), err
    assert err.startswith("error: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir()), "no results folder for refused input"
