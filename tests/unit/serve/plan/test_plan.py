"""The capacity planner: model shapes, vLLM's KV arithmetic, fit and suggestions, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from serve.config.deployment import load_config
from serve.model.shapes import SHAPES_DIR, gemma3_layer_types, read_shape_file
from serve.plan import capacity as cap
from serve.plan.inputs import load_gpus, shape_for_config
from serve.plan.planner import RequestShape, make_plan, resolve_device, suggest
from serve.plan.request import typical_request
from serve.workload.request import read_request
from tests.conftest import REPO
from tests.in_process import run_main as run_command

REPO = REPO
CONFIGS = REPO / "configs" / "deployments"
GPUS = load_gpus()
# Deployment configs (configs/scenarios/bench-*.yaml are benchmark scenarios, not deployments).
DEPLOYMENTS = sorted(CONFIGS.glob("*.yaml"))


def shape(name: str):
    return read_shape_file(SHAPES_DIR / f"{name}.json", name)


def plan_in_process(
    capsys: pytest.CaptureFixture[str], *args: str
) -> subprocess.CompletedProcess[str]:
    """`python -m serve plan ARGS` as serve's `main(argv)` in this process (for what it
    prints and exits with; the documented command lines keep `run_plan`)."""
    from serve.__main__ import main

    return run_command(main, ["plan", *args], capsys)


def run_plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve", "plan", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_parameter_count_matches_the_stand_in_checkpoint(tiny_model_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        stored = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    counted = cap.param_counts(read_shape_file(tiny_model_dir / "config.json", "tiny")).total
    assert counted == stored, f"formula {counted:,} vs checkpoint {stored:,}"


@pytest.mark.parametrize(
    ("name", "billions", "full", "sliding"),
    [
        ("medgemma-4b-it", 4.30, 5, 29),  # Gemma 3 4B: 3.88 B text + 0.42 B SigLIP
        ("medgemma-27b-it", 27.43, 10, 52),
        ("medgemma-27b-text-it", 27.01, 10, 52),
    ],
)
def test_published_shapes(name: str, billions: float, full: int, sliding: int) -> None:
    s = shape(name)
    total = cap.param_counts(s).total / 1e9
    assert total == pytest.approx(billions, rel=0.01), f"{name}: {total:.3f} B parameters"
    assert (s.num_full_layers, s.num_sliding_layers) == (full, sliding), s.layer_types
    assert s.sliding_window == 1024
    data = json.loads((SHAPES_DIR / f"{name}.json").read_text())
    assert "config.json" in data["_source"], "the data file must say where it comes from"


def test_gemma3_layer_pattern_of_34_layers() -> None:
    """MedGemma 4B: layers 6, 12, 18, 24 and 30 (1-based) are global, the other 29 sliding."""
    types = gemma3_layer_types(34)
    full = [i + 1 for i, t in enumerate(types) if t == "full_attention"]
    assert full == [6, 12, 18, 24, 30], types
    assert types.count("sliding_attention") == 29, types
    assert gemma3_layer_types(4, pattern=2) == (
        "sliding_attention",
        "full_attention",
        "sliding_attention",
        "full_attention",
    )


def test_kv_groups_follow_vllm_hybrid_grouping() -> None:
    # 5 global + 29 sliding -> groups of 5: 1 global group, ceil(29/5) = 6 sliding groups.
    assert cap.kv_groups(shape("medgemma-4b-it")) == cap.KvGroups(5, 1, 6)
    assert cap.kv_groups(shape("medgemma-27b-it")) == cap.KvGroups(10, 1, 6)


def test_cpu_tiny_arithmetic_by_hand() -> None:
    """1 GiB / (1 layer x 128 tokens x 128 B) = 65,536 blocks; a 4,096-token request needs
    32 blocks in the global group and ceil((512 - 1 + 2048) / 128) + 1 = 21 in each of the
    5 sliding groups: 137 blocks, so 65,536 / 137 = 478.36 requests."""
    cfg = load_config(CONFIGS / "cpu-tiny.yaml")
    p = make_plan(cfg, shape_for_config(cfg), None, RequestShape())
    assert p.num_blocks == 65_536
    assert p.vllm_max_concurrency == pytest.approx(65_536 / 137)
    assert p.vllm_kv_tokens == int(65_536 / 137 * 4096)
    assert p.fits and p.concurrent_requests == cfg.max_num_seqs, p


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=lambda p: p.stem)
def test_every_shipped_config_fits_its_target(path: Path) -> None:
    cfg = load_config(path)
    if cfg.device == "cuda":
        assert cfg.gpu_type, f"{path.name}: GPU configs name their sizing target"
    device = resolve_device(cfg, None, GPUS)
    p = make_plan(cfg, shape_for_config(cfg), device, RequestShape(images=0))
    assert p.fits, f"{path.name}: {p.problems}"
    assert p.concurrent_requests >= cfg.data_parallel_size, p


def test_gpu_budget_is_utilisation_minus_weights_minus_overhead() -> None:
    cfg = load_config(CONFIGS / "medgemma-4b-it.yaml")
    p = make_plan(cfg, shape("medgemma-4b-it"), GPUS["l4-24gb"], RequestShape())
    expected = 0.90 * p.device_memory_gib - p.weights_gib - p.overhead_gib  # type: ignore[operator]
    assert p.kv_budget_gib == pytest.approx(expected, abs=1e-6)
    assert 7.5 < p.weights_gib < 8.5, p.weights_gib  # ~8.6 GB of bf16 weights


def test_more_tensor_parallel_means_less_weight_and_more_kv_per_gpu() -> None:
    s = shape("medgemma-27b-it")
    base = load_config(CONFIGS / "medgemma-27b-it-tp4.yaml")
    plans = [
        make_plan(
            base.model_copy(update={"tensor_parallel_size": tp}),
            s,
            GPUS["h100-80gb"],
            RequestShape(),
        )
        for tp in (1, 2, 4, 8)
    ]
    weights = [p.weights_gib for p in plans]
    assert weights == sorted(weights, reverse=True), weights
    assert plans[0].fits and plans[-1].vllm_max_concurrency > plans[0].vllm_max_concurrency


def test_too_big_says_so_and_suggests_the_smallest_parallel_size() -> None:
    cfg = load_config(CONFIGS / "medgemma-27b-it-tp4.yaml", ["tensor_parallel_size=1"])
    s, l4 = shape("medgemma-27b-it"), GPUS["l4-24gb"]
    p = make_plan(cfg, s, l4, RequestShape())
    assert not p.fits and "exceed" in p.problems[0], p.problems
    hint = suggest(cfg, s, l4, RequestShape())
    assert hint is not None and hint.startswith("tensor_parallel_size: 4,"), hint
    tp2 = cfg.model_copy(update={"tensor_parallel_size": 2})
    assert not make_plan(tp2, s, l4, RequestShape()).fits, "then 4 would not be the smallest"
    out = run_plan(
        "--config",
        str(CONFIGS / "medgemma-27b-it-tp4.yaml"),
        "--gpu",
        "l4-24gb",
        "--set",
        "tensor_parallel_size=1",
    )
    assert out.returncode == 1, out
    assert "fits:               NO" in out.stdout and "tensor_parallel_size: 4" in out.stdout


def test_cli_prints_the_numbers(tmp_path: Path) -> None:
    out = run_plan("--config", str(CONFIGS / "medgemma-4b-it.yaml"), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["device"] == "l4-24gb" and data["fits"] is True, data
    assert data["request_tokens"] == 260 + 200 + 300, data
    text = run_plan("--config", str(CONFIGS / "medgemma-4b-it.yaml"), "--gpu", "h100-80gb")
    for needle in (
        "weights per device",
        "KV bytes per token",
        "global layers",
        "sliding layers",
        "KV budget per device",
        "concurrent requests",
        "ESTIMATE",
    ):
        assert needle in text.stdout, text.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--gpu", "v100-16gb"], "--gpu: unknown GPU type 'v100-16gb'"),
        (["--set", "gpu_type=tpu"], "gpu_type: unknown GPU type 'tpu'"),
        (["--gpu", "cpu"], "--gpu: cpu plans `device: cpu` configs only"),
        (["--set", "tensor_parallel_size=3"], "tensor_parallel_size: 3 does not divide the 8"),
        (["--set", "pipeline_parallel_size=4"], "pipeline_parallel_size: 4 does not divide the 34"),
        (["--set", "model=google/medgemma-2b"], "model: no shape data for 'google/medgemma-2b'"),
        (["--set", "nodes=3"], "nodes: 3 nodes cannot share"),
        (["--images", "-1"], "--images must be >= 0"),
    ],
)
def test_bad_input_names_the_field(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = plan_in_process(capsys, "--config", str(CONFIGS / "medgemma-4b-it.yaml"), *args)
    assert out.returncode == 2, out
    assert out.stderr.startswith("error: ") and needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr


def test_text_only_model_takes_no_images(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(CONFIGS / "medgemma-27b-text-it-tp2.yaml")
    out = plan_in_process(capsys, "--config", config, "--images", "1")
    assert out.returncode == 2 and "--images: medgemma-27b-text-it is text-only" in out.stderr


def test_typical_request_is_the_flags_over_the_scenario_over_the_defaults() -> None:
    """Pure: bench-ct.yaml's 8 slices and max_tokens 32 (its text estimated at 49 tokens),
    a flag over each, the defaults without a scenario; a text-only model gets no images."""
    scenario = read_request(REPO / "configs" / "scenarios" / "bench-ct.yaml")
    cfg = load_config(CONFIGS / "medgemma-4b-it.yaml")
    sees = shape("medgemma-4b-it")
    none = {"images": None, "text": None, "output": None}
    request, source = typical_request(cfg, sees, **none, scenario=scenario, scenario_path="ct")
    assert request == RequestShape(8, 49, 32), request
    assert source is not None and source.startswith("scenario ct: images.per_request 8"), source
    request, _ = typical_request(cfg, sees, **{**none, "output": 5}, scenario=scenario)
    assert request == RequestShape(8, 49, 5), request
    assert typical_request(cfg, sees, **none) == (RequestShape(1, 200, 300), None)
    text_cfg = load_config(CONFIGS / "medgemma-27b-text-it-tp2.yaml")
    request, source = typical_request(
        text_cfg, shape("medgemma-27b-text-it"), **none, scenario=scenario, scenario_path="ct"
    )
    assert request.images == 0 and source is not None and "text-only" in source, source


def test_a_node_holds_only_so_many_gpus() -> None:
    cfg = load_config(CONFIGS / "medgemma-4b-it-dp4.yaml", ["data_parallel_size=16"])
    p = make_plan(cfg, shape("medgemma-4b-it"), GPUS["l4-24gb"], RequestShape())
    assert not p.fits and p.problems[0].startswith("nodes: 1 node(s) need 16 x l4-24gb"), p


def test_cpu_tiny_tp2_arithmetic_by_hand() -> None:
    """TP=2 on the CPU: vLLM doubles max_num_batched_tokens (4,096) and replicates the one
    KV head on both ranks; the sliding groups then hold the whole 4,096-token request:
    32 + 5 x 33 = 197 blocks per request (vLLM logged 1,362,616 tokens, 332.67x)."""
    cfg = load_config(CONFIGS / "cpu-tiny-tp2.yaml")
    p = make_plan(cfg, shape_for_config(cfg), None, RequestShape())
    assert p.num_blocks == 65_536 and p.vllm_max_concurrency == pytest.approx(65_536 / 197), p
