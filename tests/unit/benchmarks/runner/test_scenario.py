"""Benchmark scenarios: loading, clear messages for bad input, the prepared workload, and
the request fields that serve reads without the benchmark (serve.workload)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.runner.prepared import read_workload, write_workload
from benchmarks.runner.scenario import ScenarioError, load_scenario
from benchmarks.runner.workload import kinds, prepare
from serve.workload.messages import task_messages, text_tokens
from serve.workload.request import ScenarioRequest, read_request
from tests.conftest import REPO

CONFIGS = REPO / "configs" / "scenarios"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bench-x.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("bench-*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_loads(path: Path) -> None:
    s = load_scenario(path)
    assert s.name == path.stem
    assert s.load.levels, s.load


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("bench-*.yaml")), ids=lambda p: p.name)
def test_serve_reads_the_request_fields_the_benchmark_loads(path: Path) -> None:
    """read_request (plan, render) and load_scenario (the benchmark) agree on every request
    field; the scenario's other fields are the benchmark's."""
    full = load_scenario(path)
    request = read_request(path)
    assert type(request) is ScenarioRequest
    assert request.model_dump() == full.model_dump(include=set(ScenarioRequest.model_fields))
    assert set(ScenarioRequest.model_fields) < set(type(full).model_fields)


def test_read_request_leaves_the_benchmark_fields_to_the_benchmark(tmp_path: Path) -> None:
    path = write(tmp_path, "load: {mode: sideways}\nslo: {ttft_ms: 250}\n")
    assert read_request(path).slo.ttft_ms == 250
    with pytest.raises(ScenarioError, match="load.mode"):
        load_scenario(path)
    bad = write(tmp_path, "load: {mode: sideways}\nprompts: {tasks: [nope]}\n")
    with pytest.raises(ScenarioError) as info:
        read_request(bad)
    assert str(info.value).startswith(f"{bad}: invalid benchmark scenario"), info.value
    assert "unknown task(s) ['nope']" in str(info.value) and "load" not in str(info.value)


def test_text_tokens_count_the_messages_the_benchmark_sends() -> None:
    """bench-cpu.yaml: the findings task, one image: ceil((30 system + 116 prompt
    characters) / 4) + 10 template tokens = 47, the text of task_messages' request."""
    request = read_request(CONFIGS / "bench-cpu.yaml")
    _, messages, _ = task_messages(request, 0, [{"type": "image_url", "image_url": {"url": ""}}])
    system, user = messages[0]["content"], messages[-1]["content"]
    prompt = "".join(part.get("text", "") for part in user)
    assert (len(system), len(prompt)) == (30, 116), messages
    assert text_tokens(request) == 47


def test_serve_imports_no_benchmark() -> None:
    """plan and render read scenarios through serve.workload: no benchmarks module loads."""
    code = (
        "import sys, serve.plan.cli, serve.render.cli, serve.workload.messages; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'benchmarks'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_overrides_merge_into_one_validation(tmp_path: Path) -> None:
    s = load_scenario(CONFIGS / "bench-smoke.yaml", ["load.users=[1, 3]", "max_tokens=5"])
    assert s.load.users == [1, 3] and s.max_tokens == 5
    assert s.images.kind == "xray"  # untouched fields stay


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_token: 5\n", ["max_token", "unknown key"]),
        ("images: {per_request: 1, colour: red}\n", ["images.colour", "unknown key"]),
        ("load: {duration_s: 10, warmup_s: 10}\n", ["load", "warmup_s (10)", "shorter"]),
        ("load: {users: [0, 4]}\n", ["load", "users >= 1"]),
        ("load: {mode: open}\n", ["load", "rates > 0"]),
        ("load: {mode: open, rates: [1], user_class: http}\n", ["FastHttpUser only"]),
        ("images: {text_only_share: 1.5}\n", ["images.text_only_share", "1.5"]),
        ("max_tokens: 0\n", ["max_tokens", "greater than or equal to 1"]),
        ("prompts: {tasks: [diagnose]}\n", ["unknown task", "diagnose", "findings"]),
        ("temperature: hot\n", ["temperature", "hot"]),
    ],
)
def test_bad_scenarios_name_file_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(p)
    msg = str(err.value)
    assert str(p) in msg, msg
    for part in expected:
        assert part in msg, msg


def test_unset_seed_is_drawn_per_run_and_kept() -> None:
    from benchmarks.runner.run import with_seed

    s = load_scenario(CONFIGS / "bench-smoke.yaml")
    assert s.seed is None
    seeded = with_seed(s)
    assert seeded.seed is not None and with_seed(seeded).seed == seeded.seed
    fixed = load_scenario(CONFIGS / "bench-smoke.yaml", ["seed=7"])
    assert with_seed(fixed).seed == 7


def test_unreadable_scenarios(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ScenarioError, match="mapping"):
        load_scenario(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ScenarioError, match="key=value"):
        load_scenario(CONFIGS / "bench-smoke.yaml", ["max_tokens"])


def test_cli_reports_bad_scenario_without_traceback(tmp_path: Path, capsys) -> None:
    code = main(["run", "--scenario", str(write(tmp_path, "loadd: {}\n"))])
    err = capsys.readouterr().err
    assert code == 2 and "loadd: unknown key" in err and "Traceback" not in err, err


def test_a_bad_deployment_is_named_before_any_server_starts() -> None:
    from benchmarks.runner.errors import BenchError
    from benchmarks.runner.preflight import start_deployment
    from serve.process import free_port

    s = load_scenario(CONFIGS / "bench-smoke.yaml", ["deployment_set={max_num_seqs: lots}"])
    with pytest.raises(BenchError) as err:
        start_deployment(s, free_port(), what="variant B")
    msg = str(err.value)
    assert msg.startswith("cannot start variant B: ") and "max_num_seqs" in msg, msg
    assert "'lots'" in msg, msg


def test_cli_reports_unreachable_server_before_any_load(capsys) -> None:
    from serve.process import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    code = main(["run", "--scenario", str(CONFIGS / "bench-smoke.yaml"), "--base-url", url])
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach" in err and url in err, err


def test_kinds_follow_the_shares_exactly(tmp_path: Path) -> None:
    s = load_scenario(
        CONFIGS / "bench-smoke.yaml",
        ["images.distinct=20", "images.text_only_share=0.25", "images.dicom_share=0.2"],
    )
    k = kinds(s)
    assert k.count("text") == 5 and k.count("dicom") == 3 and k.count("image") == 12, k


def test_prepared_requests_are_streaming_chat_bodies(tmp_path: Path) -> None:
    s = load_scenario(CONFIGS / "bench-smoke.yaml", ["images.per_request=2"])
    reqs = prepare(s, "some-model")
    assert len(reqs) == s.images.distinct
    by_kind = {r.kind: r for r in reqs}
    assert set(by_kind) == {"image", "dicom", "text"}, [r.kind for r in reqs]
    body = json.loads(by_kind["dicom"].body)
    assert body["model"] == "some-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["min_tokens"] == body["max_tokens"] == 8, body
    user = body["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in user if p["type"] == "image_url"]
    assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls), user
    assert body["messages"][0]["role"] == "system"
    text = json.loads(by_kind["text"].body)
    assert by_kind["text"].n_images == 0 and by_kind["text"].task == "interpret", text
    # the workload file round-trips byte for byte
    path = tmp_path / "w.jsonl"
    write_workload(path, reqs)
    assert read_workload(path) == [[r] for r in reqs]  # one request per session
