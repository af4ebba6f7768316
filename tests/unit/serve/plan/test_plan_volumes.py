"""MedGemma 1.5 volumes in the planner: the image-mask cost of Gemma 3 on vLLM's GPU backends
(serve.plan.mm_prefix), studies asked follow-up questions (serve.plan.volumes), the volumes
scenario's fields, and `python -m serve plan` over the 1.5 configs."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from serve.config.deployment import load_config
from serve.model.shapes import SHAPES_DIR, read_shape_file
from serve.plan import cli as plan_cli
from serve.plan.inputs import load_gpus
from serve.plan.mm_prefix import NO_COST, bidirectional_extra_pairs, mm_prefix_cost
from serve.plan.planner import RequestShape
from serve.plan.request import follow_up_tokens, scenario_studies
from serve.plan.roofline import attention_flops, decoder_matrix_params, prefill_flops
from serve.plan.volumes import Study, mix_ceiling, study_work
from serve.workload.request import ScenarioError, read_request
from tests.conftest import REPO

CONFIGS = REPO / "configs" / "deployments"
VOLUMES = REPO / "configs" / "scenarios" / "bench-volumes.yaml"
ONE_FIVE = [
    "medgemma-1.5-4b-it.yaml",
    "medgemma-1.5-4b-it-h100.yaml",
    "medgemma-1.5-4b-it-volumes.yaml",
]
GPUS = load_gpus()


def shape(name: str = "medgemma-1.5-4b-it"):
    return read_shape_file(SHAPES_DIR / f"{name}.json", name)


def test_one_five_has_the_4b_shapes_and_says_they_are_unchecked() -> None:
    old, new = shape("medgemma-4b-it"), shape()
    assert replace(new, name=old.name, source=old.source) == old
    source = json.loads((SHAPES_DIR / "medgemma-1.5-4b-it.json").read_text())["_source"]
    assert "NOT checked" in source and "max_position_embeddings" in source, source


def test_bidirectional_pairs_by_hand() -> None:
    """An image's token j sees j + 1 of its 256 tokens causally, all 256 both ways: 256 x
    255 / 2 = 32,640 more pairs per layer, on all 34 layers (256 < the 1,024 window)."""
    s = shape()
    assert bidirectional_extra_pairs(s, 1) == 34 * 32_640
    assert bidirectional_extra_pairs(s, 85) == 85 * 34 * 32_640
    # An image longer than the window: vLLM drops its range on sliding layers
    # (gpu_model_runner.py), so only the 5 global layers attend both ways.
    narrow = replace(s, sliding_window=128)
    assert bidirectional_extra_pairs(narrow, 1) == 5 * 32_640


def test_image_mask_cost_by_hand() -> None:
    """1 image + 300 text: 4 x 8 heads x 256 dims = 8,192 FLOPs per pair."""
    s = shape()
    causal = attention_flops(s, 0, 560)
    cost = mm_prefix_cost(s, 1, causal, efficiency=0.5)
    assert cost.extra_flops == 8_192 * 34 * 32_640 == 9_091_153_920
    assert cost.triton_attention_flops == causal + cost.extra_flops
    assert cost.slow_kernel_flops == cost.triton_attention_flops  # at half speed: twice
    assert mm_prefix_cost(s, 1, causal, efficiency=1).slow_kernel_flops == 0
    assert mm_prefix_cost(s, 0, causal) == NO_COST
    assert mm_prefix_cost(shape("medgemma-27b-text-it"), 3, causal) == NO_COST
    with pytest.raises(ValueError, match="efficiency"):
        mm_prefix_cost(s, 1, causal, efficiency=0)


def test_a_cached_prefix_is_not_prefilled_again() -> None:
    """A follow-up of 23 new tokens after 22,000 cached: its linear layers see 23 tokens,
    its attention 23 queries over the whole context, and the LM head one position."""
    s = shape()
    lm_head = 2 * s.vocab_size * s.hidden_size
    got = prefill_flops(s, 22_023, cached=22_000)
    assert got == 2 * decoder_matrix_params(s) * 23 + attention_flops(s, 22_000, 22_023) + lm_head
    assert prefill_flops(s, 560) == prefill_flops(s, 560, cached=0)


def test_study_work_of_a_volume_with_a_follow_up() -> None:
    s = shape()
    volume = Study("v", 85, 22_489, follow_ups=1, follow_up_tokens=23, output_tokens=64)
    w = study_work(s, volume, dtype_bytes=2, tp=1, block_size=16)
    assert w.vision_flops == 85 * 5_461_902_360_576
    assert w.first_flops > w.vision_flops and w.uncached_follow_up_flops == w.first_flops
    # The hit ends at the last whole block: half a block (8 tokens) is prefilled again.
    assert w.follow_up_flops == prefill_flops(s, 22_489, cached=22_489 - 23 - 8)
    assert w.follow_up_flops < w.first_flops / 1000, (w.follow_up_flops, w.first_flops)
    assert w.questions == 2 and w.decode_steps == 63


def test_mix_ceiling_by_hand() -> None:
    """One volume kind, batch 1: a study is its compute at the MFU plus its 2 x 63 decode
    steps, each reading the weights and its KV at the bandwidth share."""
    s, gpu = shape(), GPUS["h200-141gb"]
    volume = Study("v", 85, 22_489, follow_ups=1, follow_up_tokens=23, output_tokens=64)
    w = study_work(s, volume, dtype_bytes=2, tp=1, block_size=16)
    c = mix_ceiling(
        "v",
        [(1.0, w)],
        gpu,
        tp=1,
        pp=1,
        dp=2,
        batch=1,
        weight_bytes=10**9,
        bw_efficiency=0.5,
        mfu=0.5,
    )
    compute = (w.first_flops + w.follow_up_flops) / (0.5 * gpu.peak_flops)
    memory = (10**9 + w.mean_kv_bytes) / (0.5 * gpu.bandwidth_bytes_s)
    step = max(memory, w.decode_flops_per_token / (0.5 * gpu.peak_flops))
    assert c.compute_s == pytest.approx(compute, rel=1e-12)
    assert c.step_s == pytest.approx(step, rel=1e-12)
    assert c.studies_s == pytest.approx(2 / (compute + 2 * 63 * step), rel=1e-12)
    assert c.images_s == pytest.approx(85 * c.studies_s) and c.questions_s == 2 * c.studies_s
    with pytest.raises(ValueError, match="batch"):
        mix_ceiling(
            "v", [(1.0, w)], gpu, tp=1, pp=1, dp=1, batch=0, weight_bytes=1, bw_efficiency=1, mfu=1
        )


def test_the_volumes_scenario_gives_its_studies() -> None:
    scenario = read_request(VOLUMES)
    assert scenario.images.kind == "ct" and scenario.images.per_request == 85
    assert scenario.images.radiograph_share == 0.2 and len(scenario.prompts.follow_ups) == 1
    q = scenario.prompts.follow_ups[0]
    assert follow_up_tokens([q]) == -(-len(q) // 4) + 5
    request = RequestShape(85, 49, 64)
    studies = scenario_studies(scenario, shape(), request, 85)
    assert studies is not None
    radiograph, volume = studies
    assert (radiograph.images, radiograph.prompt_tokens) == (1, 260 + 49)
    assert volume.prompt_tokens == 85 * 260 + 85 * 4 + 49 and volume.follow_ups == 1
    assert scenario_studies(scenario, shape("medgemma-27b-text-it"), request, 85) is None
    bench_ct = read_request(REPO / "configs" / "scenarios" / "bench-ct.yaml")
    assert scenario_studies(bench_ct, shape(), request, 8) is not None
    assert (
        scenario_studies(
            read_request(REPO / "configs" / "scenarios" / "bench-cpu.yaml"), shape(), request, 8
        )
        is None
    )


def test_radiograph_share_is_for_ct_studies(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("images: {kind: xray, radiograph_share: 0.5}\n")
    with pytest.raises(ScenarioError, match="radiograph_share mixes radiographs into kind ct"):
        read_request(bad)


@pytest.mark.parametrize("name", ONE_FIVE)
def test_one_five_configs_keep_real_weight_paths_as_the_4b_ones(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.model == "google/medgemma-1.5-4b-it" and cfg.stand_in is None
    assert cfg.api_key_env == "MEDGEMMA_API_KEY" and "HF_TOKEN" not in cfg.env
    assert "HF_TOKEN in the environment (never here)" in (CONFIGS / name).read_text()


def test_the_volumes_config_takes_a_volume() -> None:
    cfg = load_config(CONFIGS / "medgemma-1.5-4b-it-volumes.yaml")
    assert cfg.max_model_len is not None and cfg.max_model_len >= 40960
    assert cfg.limit_mm_per_prompt["image"] >= 128 and cfg.enable_prefix_caching


ROW = re.compile(
    r"^  (100% CT|20% radiograph / 80% CT|100% radiograph) +(\d+) +[\d.]+ +([\d.]+) ", re.M
)


def test_plan_prints_volume_ceilings_for_every_one_five_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configs = [str(CONFIGS / n) for n in ONE_FIVE]
    code = plan_cli.main(["--config", *configs, "--scenario", str(VOLUMES)])
    out, err = capsys.readouterr()
    assert code == 0, err
    parts = out.split("== ")[1:]
    assert [p.splitlines()[0] for p in parts] == configs, out[:500]
    for part, gpu in zip(parts, ["l4-24gb", "h100-80gb", "h200-141gb"], strict=True):
        assert f"on 1 x {gpu}" in part and "a CT study 85 slices" in part, part
        assert "85-slice volume: 85 image(s), 22,489 prompt tokens" in part, part
        rows = {m.group(1): (int(m.group(2)), float(m.group(3))) for m in ROW.finditer(part)}
        if "image 4 <" in part:  # the 8,192-token configs refuse a volume
            assert set(rows) == {"100% radiograph"}, part
        else:
            assert set(rows) == {"100% CT", "20% radiograph / 80% CT", "100% radiograph"}, part
            assert rows["100% CT"][1] < rows["20% radiograph / 80% CT"][1], rows
    code = plan_cli.main(["--config", *configs[1:], "--scenario", str(VOLUMES), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert [d["device"] for d in data] == ["h100-80gb", "h200-141gb"], data
    volume = data[1]["study_works"][1]
    assert volume["follow_up_flops"] < volume["first_flops"] / 1000, volume


def test_flags_override_the_scenario_studies(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(CONFIGS / "medgemma-1.5-4b-it-volumes.yaml")
    args = ["--config", config, "--scenario", str(VOLUMES), "--ct-slices", "40", "--ct-shares", "1"]
    assert plan_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "a CT study 40 slices" in out and "40-slice volume" in out, out
    assert [m.group(1) for m in ROW.finditer(out)] == ["100% CT"], out
