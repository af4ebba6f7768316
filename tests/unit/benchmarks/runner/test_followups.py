"""Studies asked follow-up questions (bench-volumes.yaml): the workload's sessions and their
order, follow-ups that differ from the first question only in the question, radiographs
mixed in, and the summary split by role (first / follow_up / radiograph)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.runner.followups import by_role, role_of, with_question
from benchmarks.runner.prepared import (
    FIRST,
    FOLLOW_UP,
    RADIOGRAPH,
    PreparedRequest,
    read_workload,
    sessions,
    write_workload,
)
from benchmarks.runner.records import RequestRecord
from benchmarks.runner.report import role_lines
from benchmarks.runner.scenario import load_scenario
from benchmarks.runner.server_metrics import cache_totals
from benchmarks.runner.workload import kinds, prepare
from tests.conftest import REPO

VOLUMES = REPO / "configs" / "scenarios" / "bench-volumes.yaml"
SMALL = [  # 3 slices of 64 px: the layout of 85 x 512, cheap to prepare
    "images.per_request=3",
    "images.sizes=[[64, 64]]",
    "images.distinct=5",
    "prompts.follow_ups=['Is there a pulmonary embolism?', 'Which slice shows it best?']",
    "seed=7",
]


def test_radiographs_take_their_share_of_the_sessions_exactly() -> None:
    s = load_scenario(VOLUMES, ["images.distinct=10"])
    assert s.images.radiograph_share == 0.2
    k = kinds(s)
    assert k.count("radiograph") == 2 and k.count("study") == 8, k
    assert k[0] == "study", "the probe's session (0) is a volume"


def test_each_study_is_its_first_question_then_its_follow_ups_in_order(tmp_path: Path) -> None:
    s = load_scenario(VOLUMES, SMALL)
    reqs = prepare(s, "m")
    grouped = sessions(reqs)
    assert [len(g) for g in grouped] == [3] * 5, [len(g) for g in grouped]
    assert [g[0].session for g in grouped] == list(range(5))
    for g in grouped:
        roles = [r.role for r in g]
        kind = g[0].kind
        if kind == "study":
            assert roles == [FIRST, FOLLOW_UP, FOLLOW_UP] and g[0].n_images == 3, roles
        else:
            assert kind == "radiograph" and roles == [RADIOGRAPH] * 3 and g[0].n_images == 1
        bodies = [json.loads(r.body) for r in g]
        assert s.prompts.text is not None
        questions = [s.prompts.text, *s.prompts.follow_ups]
        for body, question in zip(bodies, questions, strict=True):
            texts = [p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text"]
            assert question in texts, (question, texts)
        # only the question differs: the images byte for byte, the other text the same
        first = bodies[0]["messages"]
        for body, question in zip(bodies[1:], questions[1:], strict=True):
            assert with_question(first, questions[0], question) == body["messages"]
            assert {k: v for k, v in body.items() if k != "messages"} == {
                k: v for k, v in bodies[0].items() if k != "messages"
            }
    studies = [g for g in grouped if g[0].kind == "study"]
    assert studies[0][0].body != studies[1][0].body, "each study has its own slices"
    path = tmp_path / "w.jsonl"
    write_workload(path, reqs)
    assert read_workload(path) == grouped


def test_a_radiograph_is_one_grey_image_asked_the_same_questions() -> None:
    s = load_scenario(VOLUMES, SMALL)
    radiograph = next(r for r in prepare(s, "m") if r.kind == "radiograph")
    parts = json.loads(radiograph.body)["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 1 and urls[0].startswith("data:image/png;base64,"), parts


def test_scenarios_without_follow_ups_keep_one_request_per_session() -> None:
    s = load_scenario(REPO / "configs" / "scenarios" / "bench-smoke.yaml", ["images.distinct=4"])
    reqs = prepare(s, "m")
    assert [r.session for r in reqs] == [0, 1, 2, 3] and {r.role for r in reqs} == {""}


def test_roles() -> None:
    assert [role_of("study", q) for q in (0, 1, 2)] == [FIRST, FOLLOW_UP, FOLLOW_UP]
    assert role_of("radiograph", 0) == role_of("radiograph", 1) == RADIOGRAPH
    assert role_of("text", 0) == "" and role_of("image", 1) == FOLLOW_UP


def test_with_question_names_a_missing_question() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "A?"}]}]
    assert with_question(messages, "A?", "B?")[0]["content"][0]["text"] == "B?"
    assert messages[0]["content"][0]["text"] == "A?", "the original is left as it was"
    with pytest.raises(ValueError, match="no text part 'C\\?'"):
        with_question(messages, "C?", "B?")


def rec(role: str, ttft: float, latency: float, n_images: int = 85, ok: bool = True):
    return RequestRecord(
        start_s=0.0, success=ok, error="" if ok else "boom", status=200, ttft_s=ttft,
        latency_s=latency, prompt_tokens=22_900, output_tokens=8, n_images=n_images,
        kind="radiograph" if role == RADIOGRAPH else "study", role=role,
    )  # fmt: skip


def test_summary_splits_first_questions_from_follow_ups() -> None:
    records = [
        rec(FIRST, 5.0, 6.0), rec(FOLLOW_UP, 0.4, 0.6),
        rec(FIRST, 7.0, 8.0), rec(FOLLOW_UP, 0.6, 0.8),
        rec(RADIOGRAPH, 0.2, 0.3, n_images=1), rec(FIRST, 1.0, 1.0, ok=False),
    ]  # fmt: skip
    out = by_role(records, window_s=10.0)
    roles = out["roles"]
    assert set(roles) == {FIRST, FOLLOW_UP, RADIOGRAPH}
    assert (roles[FIRST]["requests"], roles[FIRST]["completed"], roles[FIRST]["failed"]) == (
        3, 2, 1,
    )  # fmt: skip
    assert roles[FIRST]["ttft_ms"]["p50"] == 6000 and roles[FIRST]["e2e_ms"]["p50"] == 7000
    assert roles[FOLLOW_UP]["e2e_ms"]["p50"] == 700 and roles[RADIOGRAPH]["completed"] == 1
    studies = out["studies"]
    assert studies["studies_per_s"] == 0.2 and studies["slices_per_s"] == 17.0, studies
    assert studies["follow_up_over_first"] == {"ttft_ms": 0.083, "e2e_ms": 0.1}, studies
    assert by_role([rec("", 1.0, 1.0)], 1.0) == {}
    lines = role_lines({"levels": [{"level": 1.0, **out}], "caches": {}})
    assert lines and "follow-up / first: ttft 0.08x, e2e 0.10x" in lines[0], lines


def test_no_follow_ups_no_ratio() -> None:
    out = by_role([rec(FIRST, 5.0, 6.0)], window_s=6.0)
    assert out["studies"]["follow_up_over_first"] == {"ttft_ms": None, "e2e_ms": None}


PAGE = """# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{{engine="0"}} {q}
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{{engine="0"}} {h}
# TYPE vllm:mm_cache_queries_total counter
vllm:mm_cache_queries_total{{engine="0"}} {mq}
# TYPE vllm:mm_cache_hits_total counter
vllm:mm_cache_hits_total{{engine="0"}} {mh}
"""  # as vLLM 0.32 writes them (tests/unit/data/vllm-0.32-metrics.txt)


def test_cache_totals_are_the_counters_change_over_the_run() -> None:
    before = PAGE.format(q=1000, h=0, mq=10, mh=0)
    after = PAGE.format(q=1000 + 2 * 22_913, h=22_784, mq=180, mh=85)
    totals = cache_totals(before, after)
    assert totals["prefix_cache"] == {"queries": 45_826, "hits": 22_784, "hit_rate": 0.4972}
    assert totals["mm_cache"] == {"queries": 170, "hits": 85, "hit_rate": 0.5}
    lines = role_lines({"levels": [], "caches": totals})
    assert lines[0] == "prefix cache (tokens) over the run: 22,784 hits of 45,826 (49.7%)", lines
    assert cache_totals("", after) == {} and cache_totals("not a page {", after) == {}


def test_prepared_request_line_round_trips() -> None:
    r = PreparedRequest(b'{"a":1}', 85, "study", "text", 3, FOLLOW_UP)
    assert PreparedRequest.from_line(r.to_line()) == r
