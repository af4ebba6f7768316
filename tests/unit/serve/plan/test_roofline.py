"""The roofline (serve/plan/roofline.py) and the ceiling lines `plan` prints from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from serve.config.deployment import load_config
from serve.model.shapes import ShapeError
from serve.plan import cli as plan_cli
from serve.plan.inputs import load_gpus
from serve.plan.planner import RequestShape, make_plan
from serve.plan.roofline import make_roofline
from tests.conftest import REPO
from tests.unit.serve.plan.test_plan import CONFIGS, GPUS, plan_in_process, shape

H100_REALISTIC = dict(dtype_bytes=2, tp=1, pp=1, dp=1, batch=256, images=1, text_tokens=300)


def test_roofline_arithmetic_by_hand() -> None:
    """MedGemma 4B bf16 on one H100: one 896 px image + 300 text tokens in, 300 out, 256
    sequences decoding together, 70% of 3,350 GB/s and 60% of 989 TFLOP/s."""
    r = make_roofline(
        shape("medgemma-4b-it"), GPUS["h100-80gb"], **H100_REALISTIC, output_tokens=300
    )
    # SigLIP: (896 / 14)^2 = 4,096 patches, hidden 1,152, MLP 4,304, 27 layers.
    assert r.vision is not None and r.vision.patches == 4096
    assert r.vision.linear_per_layer == 124_721_823_744  # 2 x (4 x 1152^2 + 2 x 1152 x 4304) x 4096
    assert r.vision.attention_per_layer == 77_309_411_328  # 4 x 4096^2 x 1152
    assert r.vision.patch_embedding == 5_549_064_192  # 2 x 3 x 14^2 x 1152 x 4096
    assert r.vision.projector == 1_509_949_440  # 2 x 1152 x 2560 x 256 image tokens
    # 27 x (124,721,823,744 + 77,309,411,328) + 5,549,064,192 + 1,509,949,440: the issue's ~5.4 T
    assert r.vision_flops == 5_461_902_360_576
    # Decoder matrices: 34 x (2560 x 256 x (2 x 8 + 2 x 4) + 3 x 2560 x 10240) = 34 x 94,371,840
    assert r.decoder_matrix_params == 3_208_642_560
    # Prompt: 256 image tokens + 4 wrapper tokens + 300 text = 560, under the 1,024 window:
    # 2 x 3,208,642,560 x 560 + 4 x 8 heads x 256 x 34 layers x (560 x 561 / 2) + 2 x 262208 x 2560
    assert r.prompt_tokens == 560
    assert r.prefill_flops == 3_593_679_667_200 + 43_751_178_240 + 1_342_504_960
    # The image mask (serve/plan/mm_prefix.py): 34 layers x 256 x 255 / 2 more query-key
    # pairs at 4 x 8 x 256 FLOPs, and the prompt's attention (43,751,178,240 causal + those
    # 9,091,153,920) once more, at 50% of the MFU in Triton's kernel.
    assert r.mm_prefix.extra_flops == 9_091_153_920
    assert r.mm_prefix.slow_kernel_flops == 43_751_178_240 + 9_091_153_920
    assert r.request_flops == 5_461_902_360_576 + 3_638_773_350_400 + 61_933_486_080
    assert r.kv_bytes_per_token == 139_264  # 34 x 2 x 4 x 256 x 2 = 136 KiB
    # Weights read per step: (34 x 94,382,592 (with norms) + 262,208 x 2,560 + 2,560) x 2 bytes
    assert r.weight_bytes == 7_760_526_336
    # 299 decode steps at contexts 561..859: mean 710 tokens, 139,264 x 710 bytes of KV
    assert r.decode_steps == 299 and r.mean_context == 710
    assert r.mean_kv_bytes == pytest.approx(98_877_440)
    # 2 x (3,208,642,560 + 262,208 x 2,560) + 4 x 8 x 256 x 34 x 710
    assert r.decode_flops_per_token == pytest.approx(7_759_790_080 + 197_754_880)
    step = (7_760_526_336 + 256 * 98_877_440) / (0.70 * 3350e9)  # 14.10 ms, memory-bound
    compute = 9_162_609_197_056 / (0.60 * 989e12)  # 15.44 ms of vision + prefill + mask
    c = r.ceiling
    assert c.step_bound == "memory" and c.step_s == pytest.approx(step, rel=1e-12)
    assert c.compute_s == pytest.approx(compute, rel=1e-12)
    assert c.req_s == pytest.approx(1 / (compute + 299 * step / 256), rel=1e-12)  # 31.3
    assert c.tok_s == pytest.approx(300 * c.req_s, rel=1e-12)
    hard_step = (7_760_526_336 + 256 * 98_877_440) / 3350e9
    hard = 1 / (9_162_609_197_056 / 989e12 + 299 * hard_step / 256)  # 48.1
    assert r.hard_bound.req_s == pytest.approx(hard, rel=1e-12)
    assert round(c.req_s, 1) == 31.3 and round(r.hard_bound.req_s, 1) == 48.1, (c, r.hard_bound)


def test_sliding_layers_stop_reading_kv_at_their_window() -> None:
    """A 2,000-token text prompt, 3 output tokens: decode steps at contexts 2,001 and 2,002
    read 5 global layers x 2,001.5 tokens + 29 sliding layers x 1,024 tokens, 4,096 B each."""
    s = shape("medgemma-4b-it")
    args = {**H100_REALISTIC, "images": 0, "text_tokens": 2000}
    r = make_roofline(s, GPUS["h100-80gb"], **args, output_tokens=3)
    assert r.vision is None and r.vision_flops == 0 and r.decode_steps == 2
    assert r.mean_kv_bytes == pytest.approx(4096 * (5 * 2001.5 + 29 * 1024))  # 162,625,536


def test_tensor_and_data_parallel_scale_the_ceiling() -> None:
    """4 KV heads split evenly over 2 ranks: every term halves, so TP 2 doubles req/s; two
    replicas double it too. Pipeline stages re-read their weights per micro-batch."""
    s, h100 = shape("medgemma-4b-it"), GPUS["h100-80gb"]
    one = make_roofline(s, h100, **H100_REALISTIC, output_tokens=300)
    tp2 = make_roofline(s, h100, **{**H100_REALISTIC, "tp": 2}, output_tokens=300)
    dp2 = make_roofline(s, h100, **{**H100_REALISTIC, "dp": 2}, output_tokens=300)
    pp2 = make_roofline(s, h100, **{**H100_REALISTIC, "pp": 2}, output_tokens=300)
    assert tp2.ceiling.req_s == pytest.approx(2 * one.ceiling.req_s, rel=1e-12)
    assert dp2.ceiling.req_s == pytest.approx(2 * one.ceiling.req_s, rel=1e-12)
    pp_step = (2 * 7_760_526_336 + 256 * 98_877_440) / (2 * 0.70 * 3350e9)
    assert pp2.ceiling.step_s == pytest.approx(pp_step, rel=1e-12)
    assert one.ceiling.req_s < pp2.ceiling.req_s < tp2.ceiling.req_s


def test_gpu_catalogue_has_the_roofline_data() -> None:
    h200 = GPUS["h200-141gb"]
    assert (h200.memory_bandwidth_gb_s, h200.bf16_dense_tflops) == (4800, 989), h200
    assert (GPUS["h100-80gb"].memory_bandwidth_gb_s, GPUS["l4-24gb"].bf16_dense_tflops) == (
        3350,
        121,
    )
    for gpu in GPUS.values():
        assert gpu.memory_bandwidth_gb_s > 0 and gpu.bf16_dense_tflops > 0, gpu


def test_gpu_catalogue_entry_without_roofline_data_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "gpus.yaml"
    bad.write_text(
        "x-1gb: {description: X, memory_mib: 1024, nvlink: false, max_per_node: 1, "
        "memory_bandwidth_gb_s: 100}\n"
    )
    with pytest.raises(ShapeError, match=r"GPU 'x-1gb' has no bf16_dense_tflops"):
        load_gpus(bad)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = plan_cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


CEILING = re.compile(r"^ceiling: (\d+\.\d) req/s, (\d+) tok/s$", re.M)
HARD_BOUND = re.compile(r"^hard bound: (\d+\.\d) req/s, (\d+) tok/s ", re.M)


def test_ceiling_line_of_the_h100_config(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(CONFIGS / "medgemma-4b-it-h100.yaml")
    flags = ["--images", "1", "--text-tokens", "300", "--output-tokens", "300"]
    code, out, err = run_main(capsys, "--config", config, *flags)
    assert code == 0, err
    ceiling, hard = CEILING.search(out), HARD_BOUND.search(out)
    assert ceiling and hard, out
    assert ceiling.groups() == ("31.3", "9400"), ceiling.group(0)
    assert hard.group(1) == "48.1", hard.group(0)
    for needle in ("70% of memory bandwidth, 60% MFU", "139,264 B per token", "5.46 TFLOP"):
        assert needle in out, out
    code, out, err = run_main(capsys, "--config", config, *flags, "--mfu", "1", "--json")
    data = json.loads(out)
    assert data["roofline"]["ceiling"]["mfu"] == 1 and data["roofline"]["batch"] == 256, data
    assert data["roofline"]["hard_bound"]["req_s"] == pytest.approx(48.1, abs=0.05), data


def test_no_ceiling_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "--config", str(CONFIGS / "cpu-tiny.yaml"))
    assert code == 0, err
    assert "roofline:           not computed for the CPU" in out, out
    assert not CEILING.search(out) and "hard bound" not in out, out


def test_scenario_sets_the_request_shape(capsys: pytest.CaptureFixture[str]) -> None:
    """bench-cpu.yaml: one image, the findings prompt, max_tokens 64. Text estimate:
    ceil((30 system + 116 prompt characters) / 4) + 10 template tokens = 47."""
    args = ["--config", str(CONFIGS / "medgemma-4b-it.yaml"), "--scenario"]
    code, out, err = run_main(
        capsys, *args, str(REPO / "configs" / "scenarios" / "bench-cpu.yaml"), "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["request_tokens"] == 260 + 47 + 64, data["request_source"]
    assert data["roofline"]["prompt_tokens"] == 307 and data["roofline"]["decode_steps"] == 63
    assert "bench-cpu.yaml" in data["request_source"], data["request_source"]
    code, out, err = run_main(
        capsys, *args, str(REPO / "configs" / "scenarios" / "bench-cpu.yaml"), "--text-tokens", "9"
    )
    assert "1 image(s) + 9 text + 64 output" in out and CEILING.search(out), out


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (None, "bad.yaml: scenario file not found"),
        ("images: [1,\n", "bad.yaml: not valid YAML: while parsing a flow node; expected"),
        (
            "max_tokens: 0\nimages: {per_request: 0}\n",
            "invalid benchmark scenario; images.per_request: Input should be greater than or "
            "equal to 1 (got 0); max_tokens:",
        ),
    ],
)
def test_bad_scenario_is_one_line(
    tmp_path: Path, text: str | None, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "bad.yaml"
    if text is not None:
        scenario.write_text(text)
    config = str(CONFIGS / "medgemma-4b-it.yaml")
    out = plan_in_process(capsys, "--config", config, "--scenario", str(scenario))
    assert out.returncode == 2, out
    assert out.stderr.startswith("error: --scenario: ") and needle in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize("flag", ["--bw-efficiency", "--mfu"])
def test_efficiency_must_be_a_share(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    code, _, err = run_main(capsys, "--config", str(CONFIGS / "medgemma-4b-it.yaml"), flag, "1.5")
    assert code == 2 and err.startswith(f"error: {flag} must be in (0, 1]"), err


def test_replicas_behind_the_router_count_as_engines(capsys: pytest.CaptureFixture[str]) -> None:
    """4 replicas of one L4 each hold and serve what data_parallel_size 4 does: 4 x the
    concurrency and the ceiling of one replica, and the report says which it is."""
    replicas = CONFIGS / "medgemma-4b-it-4replicas.yaml"
    just_one = ["replicas.count=1", "replicas.gpus=['0']"]
    s, l4, req = shape("medgemma-4b-it"), GPUS["l4-24gb"], RequestShape()
    one = make_plan(load_config(replicas, just_one), s, l4, req)
    four = make_plan(load_config(replicas), s, l4, req)
    dp4 = make_plan(load_config(CONFIGS / "medgemma-4b-it-dp4.yaml"), s, l4, req)
    assert (one.replicas, four.replicas, dp4.replicas) == (1, 4, 1)
    assert (one.dp, four.dp, dp4.dp) == (1, 4, 4)
    assert four.concurrent_requests == 4 * one.concurrent_requests == dp4.concurrent_requests

    def ceiling(*overrides: str) -> float:
        sets = [arg for o in overrides for arg in ("--set", o)]
        code, out, err = run_main(capsys, "--config", str(replicas), "--json", *sets)
        assert code == 0, err
        return float(json.loads(out)["roofline"]["ceiling"]["req_s"])

    assert ceiling() == pytest.approx(4 * ceiling(*just_one), rel=1e-9)
    code, text, err = run_main(capsys, "--config", str(replicas))
    assert code == 0, err
    assert "x 4 replicas behind vllm-router" in text and "x 4 replicas)" in text, text
    assert text.splitlines()[0].startswith("medgemma-4b-it on 4 x l4-24gb"), text
