"""The planner's studies table: concurrent radiographs and CT studies per replica, by mix."""

from __future__ import annotations

import json

import pytest

from serve.config.deployment import load_config
from serve.plan import capacity as cap
from serve.plan import cli as plan_cli
from serve.plan.inputs import load_gpus, shape_for_config
from serve.plan.planner import RequestShape, make_plan, resolve_device
from serve.plan.studies import StudyCost, mix_name, mix_rows, parse_shares
from tests.conftest import REPO

CONFIGS = REPO / "configs" / "deployments"
GPUS = load_gpus()
RADIOGRAPH = StudyCost(images=1, tokens=760, blocks=10, kv_bytes=10 * 1024)
CT = StudyCost(images=32, tokens=8948, blocks=100, kv_bytes=100 * 1024)


def rows(**limits: int):
    kw = {"num_blocks": 1000, "max_num_seqs": 32, "max_model_len": 10240, "image_limit": 32}
    return mix_rows([0, 0.5, 1], RADIOGRAPH, CT, **{**kw, **limits})


def test_mix_arithmetic_by_hand() -> None:
    r0, half, ct = rows()
    assert (r0.kv_studies, r0.concurrent, r0.bound) == (100, 32, "max_num_seqs")
    assert half.kv_studies == pytest.approx(1000 / 55)  # (10 + 100) / 2 blocks a study
    assert (half.concurrent, half.bound) == (18, "KV cache")
    assert half.mean_tokens == (760 + 8948) / 2 and half.mean_kv_bytes == 55 * 1024
    assert (ct.kv_studies, ct.concurrent, ct.bound) == (10, 10, "KV cache")


@pytest.mark.parametrize(
    ("limits", "needle"),
    [
        ({"image_limit": 4}, "limit_mm_per_prompt image 4 < 32 slices: refused"),
        ({"max_model_len": 8192}, "max_model_len 8,192 < 8,948 tokens: refused"),
    ],
)
def test_a_ct_study_above_a_limit_is_refused(limits: dict[str, int], needle: str) -> None:
    r0, half, ct = rows(**limits)
    assert (r0.concurrent, r0.bound) == (32, "max_num_seqs"), "radiographs are not affected"
    for row in (half, ct):
        assert (row.concurrent, row.bound) == (0, needle), row


def test_mix_names() -> None:
    assert [mix_name(p) for p in (0, 0.2, 1)] == [
        "100% radiograph",
        "80% radiograph / 20% CT",
        "100% CT",
    ]


def test_parse_shares() -> None:
    assert parse_shares("0, 0.2,1") == [0.0, 0.2, 1.0]
    with pytest.raises(ValueError, match="not a number: 'x'"):
        parse_shares("0,x")
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 1.5"):
        parse_shares("1.5")


def plan_of(name: str, gpu: str | None = None, **kw):
    cfg = load_config(CONFIGS / name)
    shape = shape_for_config(cfg)
    return cfg, shape, make_plan(cfg, shape, resolve_device(cfg, gpu, GPUS), RequestShape(), **kw)


def test_ct_config_holds_32_slice_studies_on_an_l4() -> None:
    cfg, shape, p = plan_of("medgemma-4b-it-ct.yaml")
    assert p.ct is not None and p.radiograph is not None
    # 32 x (256 image + 4 wrapper) + 32 "SLICE n" x 4 + 200 text + 300 output
    assert p.ct.tokens == 32 * 260 + 32 * 4 + 200 + 300 == 8948
    assert p.ct.tokens <= cfg.max_model_len
    in_flight = cap.in_flight_tokens(cfg, cfg.max_num_batched_tokens or 0)
    groups = cap.kv_groups(shape)
    assert p.ct.blocks == cap.blocks_per_request(shape, groups, 8948, 16, in_flight)
    by_name = {r.name: r for r in p.studies}
    ct = by_name["100% CT"]
    assert ct.bound == "KV cache" and ct.concurrent == int(p.num_blocks / p.ct.blocks), ct
    assert ct.concurrent >= 12, "the config's comments promise ~14 CT studies on an L4"
    assert by_name["100% radiograph"].bound == "max_num_seqs"
    assert by_name["80% radiograph / 20% CT"].concurrent == cfg.max_num_seqs


def test_the_general_config_refuses_32_slice_studies() -> None:
    _, _, p = plan_of("medgemma-4b-it.yaml")
    refused = [r for r in p.studies if r.ct_share > 0]
    assert refused and all(r.concurrent == 0 for r in refused), p.studies
    assert "limit_mm_per_prompt image 4" in refused[0].bound


def test_a_larger_gpu_holds_more_ct_studies() -> None:
    _, _, l4 = plan_of("medgemma-4b-it-ct.yaml")
    _, _, a100 = plan_of("medgemma-4b-it-ct.yaml", "a100-80gb")
    assert a100.studies[-1].kv_studies > 4 * l4.studies[-1].kv_studies


def test_text_only_model_has_no_studies_table() -> None:
    _, _, p = plan_of("medgemma-27b-text-it-tp2.yaml")
    assert p.radiograph is None and p.studies == []


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = plan_cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(CONFIGS / "cpu-bench-ct.yaml")
    code, out, err = run_main(capsys, "--config", config, "--ct-slices", "16", "--ct-shares", "0,1")
    assert code == 0, err
    table = out[out.index("studies per replica") :].splitlines()
    assert "16 slices" in table[0] and "bound" in table[1], out
    assert table[2].split()[:2] == ["100%", "radiograph"] and table[3].split()[:2] == ["100%", "CT"]
    code, out, _ = run_main(capsys, "--config", config, "--ct-slices", "16", "--json")
    studies = json.loads(out)["studies"]
    assert [s["ct_share"] for s in studies] == [0.0, 0.2, 0.5, 1.0], studies


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ct-slices", "0"], "error: --ct-slices must be >= 1"),
        (["--ct-shares", "0,2"], "error: --ct-shares: a CT share must be in [0, 1], got 2"),
    ],
)
def test_bad_study_flags_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, out, err = run_main(capsys, "--config", str(CONFIGS / "cpu-bench-ct.yaml"), *args)
    assert code == 2 and err.strip() == needle and not out, (code, out, err)
