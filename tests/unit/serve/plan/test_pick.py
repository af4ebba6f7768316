"""`python -m serve pick-config`: the config `make serve` picks on a GPU host, from nvidia-smi's
own output (`--query-gpu=name,memory.total --format=csv,noheader`), and why."""

from __future__ import annotations

import subprocess

import pytest

from serve.config.deployment import load_config
from serve.plan import pick as pick_module
from serve.plan.inputs import load_gpus
from serve.plan.pick import CPU_CONFIG, SIZED, SeenGpu, parse_nvidia_smi, pick
from tests.conftest import REPO
from tests.in_process import run_main

GPUS = load_gpus()
L4 = "configs/deployments/medgemma-1.5-4b-it.yaml"
H100 = "configs/deployments/medgemma-1.5-4b-it-h100.yaml"
H200 = "configs/deployments/medgemma-1.5-4b-it-h200.yaml"


def picked(nvidia_smi: str) -> tuple[str, str]:
    choice = pick(parse_nvidia_smi(nvidia_smi), GPUS)
    return choice.config, choice.reason


@pytest.mark.parametrize(
    ("nvidia_smi", "config", "why"),
    [
        ("NVIDIA L4, 23034 MiB", L4, "not an H100 or H200"),
        ("NVIDIA H100 80GB HBM3, 81559 MiB", H100, "sized by the planner for NVIDIA H100"),
        ("NVIDIA H100 PCIe, 81559 MiB", H100, "sized by the planner for NVIDIA H100"),
        ("NVIDIA H100 NVL, 95830 MiB", H100, "sized by the planner for NVIDIA H100"),
        ("NVIDIA H200, 143771 MiB", H200, "sized by the planner for NVIDIA H200"),
        # An A100 40 GB is no H100: the L4 sizing, which its 40 GB holds with KV to spare.
        ("NVIDIA A100-SXM4-40GB, 40960 MiB", L4, "at least the 21882 MiB of the l4-24gb"),
        # The H100's memory without its bandwidth: the H100's 256 streams would run slow.
        ("NVIDIA A100-SXM4-80GB, 81920 MiB", L4, "not an H100 or H200"),
        # A GPU too small for any sizing: still the smallest, with a warning saying so.
        ("Tesla T4, 15360 MiB", L4, "WARNING: under the 21882 MiB"),
    ],
)
def test_pick_by_name_and_memory(nvidia_smi: str, config: str, why: str) -> None:
    got, reason = picked(nvidia_smi)
    assert got == config, reason
    assert reason.startswith(nvidia_smi + ": ") and why in reason, reason


def test_an_h100_named_gpu_with_too_little_memory_gets_the_l4_sizing() -> None:
    """A name is not enough: the H100 config's KV cache was planned for 80 GB."""
    got, reason = picked("NVIDIA H100 80GB HBM3, 40000 MiB")
    assert got == L4, reason


def test_gpu_0_decides_and_the_others_are_named() -> None:
    got, reason = picked("NVIDIA H200, 143771 MiB\nNVIDIA L4, 23034 MiB\n")
    assert got == H200, reason
    assert "2 GPUs found, a one-GPU config uses GPU 0" in reason, reason


def test_no_gpu_is_the_cpu_config() -> None:
    assert pick([], GPUS).config == CPU_CONFIG == "configs/deployments/cpu-tiny.yaml"
    assert parse_nvidia_smi("\n") == []


def test_nvidia_smi_lines_parse_and_a_bad_one_is_named() -> None:
    assert parse_nvidia_smi("NVIDIA L4, 23034 MiB\nNVIDIA H200, 143771 MiB\n") == [
        SeenGpu("NVIDIA L4", 23034),
        SeenGpu("NVIDIA H200", 143771),
    ]
    with pytest.raises(ValueError, match="'No devices were found'"):
        parse_nvidia_smi("No devices were found")


@pytest.mark.parametrize(("pattern", "gpu_type", "config"), SIZED)
def test_each_picked_config_is_sized_for_its_gpu(
    pattern: str | None, gpu_type: str, config: str
) -> None:
    """The table and the configs agree: each is the current model, sized for its gpu_type."""
    cfg = load_config(REPO / config)
    assert cfg.gpu_type == gpu_type and cfg.device == "cuda", (config, cfg.gpu_type)
    assert cfg.model == "google/medgemma-1.5-4b-it", cfg.model
    # Each catalogue GPU's own nvidia-smi figure picks its config.
    name = {"h200-141gb": "NVIDIA H200", "h100-80gb": "NVIDIA H100 80GB HBM3"}.get(
        gpu_type, "NVIDIA L4"
    )
    assert picked(f"{name}, {GPUS[gpu_type].memory_mib} MiB")[0] == config


def test_cli_prints_the_path_and_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_main(pick_module.main, ["--nvidia-smi", "NVIDIA H100 80GB HBM3, 81559 MiB"], capsys)
    code, out, err = r.returncode, r.stdout, r.stderr
    assert code == 0 and out == H100 + "\n", (code, out, err)
    assert err.startswith(f"pick-config: {H100}: NVIDIA H100 80GB HBM3, 81559 MiB: "), err


def test_cli_refuses_unreadable_nvidia_smi_output_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    r = run_main(pick_module.main, ["--nvidia-smi", "garbage"], capsys)
    code, out, err = r.returncode, r.stdout, r.stderr
    assert code == 2 and not out, (code, out)
    assert err.strip().splitlines() == [
        "error: cannot read nvidia-smi's line 'garbage' (want 'NAME, N MiB')"
    ], err


def test_make_serve_on_a_gpu_host_serves_the_picked_config() -> None:
    """The Makefile's default with DEVICE=cuda asks pick-config (make -n: nothing runs)."""
    r = subprocess.run(
        ["make", "-n", "serve", "DEVICE=cuda", "APT=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert ".venv/bin/python -m serve --config $(.venv/bin/python -m serve pick-config)" in (
        r.stdout
    ), r.stdout
