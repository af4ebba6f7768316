"""Rendering for Ray, and what `render` refuses: every shipped config, bad input named."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from serve.command.argv import check_vllm_argv
from serve.config.deployment import load_config
from serve.render.ray import RenderError, env_assignments, render_ray, to_script
from tests.in_process import run_main
from tests.unit.serve.render.render_checks import CONFIGS, DEPLOYMENTS, REPO, run_render

# --- Ray ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=lambda p: p.stem)
def test_ray_render_for_every_config(path: Path) -> None:
    cfg = load_config(path)
    launch = render_ray(cfg, "/models/m" if cfg.stand_in else None)
    assert launch.head[:2] == ["ray", "start"] and "--head" in launch.head, launch.head
    assert f"--port={cfg.ray.port}" in launch.head
    assert launch.workers == cfg.nodes - 1
    if cfg.device == "cuda":
        assert f"--num-gpus={cfg.devices_per_node}" in launch.head, launch.head
    serve = launch.serve
    i = serve.index("--distributed-executor-backend")
    assert serve[i + 1] == "ray", serve
    for name, size in (
        ("--tensor-parallel-size", cfg.tensor_parallel_size),
        ("--pipeline-parallel-size", cfg.pipeline_parallel_size),
        ("--data-parallel-size", cfg.data_parallel_size),
    ):
        assert (name in serve and serve[serve.index(name) + 1] == str(size)) == (size > 1), serve
    error = check_vllm_argv(serve[3:])  # vLLM's own parser, without `python -m module`
    assert error is None, f"vLLM rejects the rendered command: {error}"
    script = to_script(launch, cfg)
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0, script


def test_ray_multi_node_pipeline_config() -> None:
    cfg = load_config(CONFIGS / "medgemma-27b-it-2nodes.yaml")
    launch = render_ray(cfg)
    assert launch.workers == 1 and "--num-gpus=4" in launch.worker, launch.worker
    assert "--address=${RAY_HEAD_IP}:6379" in launch.worker and "--block" in launch.worker
    script = to_script(launch, cfg)
    assert "# 2. On each of the 1 worker node(s)" in script, script
    assert "HF_TOKEN" in script and 'VLLM_API_KEY="$MEDGEMMA_API_KEY"' in script, script


def test_ray_data_parallel_across_nodes() -> None:
    cfg = load_config(CONFIGS / "medgemma-4b-it-dp4.yaml", ["data_parallel_size=8", "nodes=2"])
    serve = render_ray(cfg).serve
    assert serve[serve.index("--data-parallel-backend") + 1] == "ray", serve
    assert serve[serve.index("--data-parallel-size-local") + 1] == "4", serve
    assert check_vllm_argv(serve[3:]) is None


def test_tp_across_nodes_is_rendered_with_a_warning() -> None:
    cfg = load_config(CONFIGS / "medgemma-27b-it-tp4.yaml", ["nodes=2"])
    notes = render_ray(cfg).notes
    assert notes and "spans nodes" in notes[0], notes


def test_ray_renders_the_processed_image_cache_off_and_says_so() -> None:
    """vLLM's shared-memory image cache cannot start on Ray's executor (no worker lock);
    `lru` would drift, so Ray gets no cache, and a note saying so."""
    launch = render_ray(load_config(CONFIGS / "medgemma-1.5-4b-it-volumes.yaml"))
    o = launch.serve
    assert o[o.index("--mm-processor-cache-gb") + 1] == "0", o
    assert "--mm-processor-cache-type" not in o, o
    assert any("mm_processor_cache_gb 8 is rendered as 0" in n for n in launch.notes), launch


def test_env_assignments_survive_the_shell() -> None:
    env = {"A": "0|1", "B": "", "RAY_ADDRESS": "${RAY_HEAD_IP}:6379", "C": "x y"}
    script = f"RAY_HEAD_IP=10.0.0.5; {env_assignments(env)} env"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    seen = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert seen["A"] == "0|1" and seen["B"] == "" and seen["C"] == "x y", out.stdout
    assert seen["RAY_ADDRESS"] == "10.0.0.5:6379", out.stdout


def test_ray_cli_and_the_stand_in_folder() -> None:
    out = run_render("ray", "--config", str(CONFIGS / "cpu-tiny-tp2.yaml"), "--set", "nodes=2")
    assert out.returncode == 0, out.stderr
    assert "tiny-medgemma-tiny-seed0" in out.stdout and "--tensor-parallel-size 2" in out.stdout


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["k8s", "--config", "configs/deployments/cpu-tiny.yaml"],
            "stand_in: the random-weight stand-in",
        ),
        (
            [
                "k8s",
                "--config",
                "configs/deployments/medgemma-4b-it.yaml",
                "--set",
                "tensor_parallel_size=3",
            ],
            "tensor_parallel_size: 3 does not divide the 8 attention heads",
        ),
        (
            [
                "ray",
                "--config",
                "configs/deployments/medgemma-27b-it-tp4.yaml",
                "--set",
                "pipeline_parallel_size=4",
            ],
            "pipeline_parallel_size: 4 does not divide the 62 layers",
        ),
        (
            ["ray", "--config", "configs/deployments/medgemma-4b-it-dp4.yaml", "--set", "nodes=3"],
            "nodes: 3 nodes cannot share the 4 devices",
        ),
        (
            [
                "k8s",
                "--config",
                "configs/deployments/medgemma-4b-it.yaml",
                "--set",
                "kubernetes.name=Bad_Name",
            ],
            "kubernetes.name",
        ),
        (
            [
                "k8s",
                "--config",
                "configs/deployments/medgemma-4b-it.yaml",
                "--set",
                "kubernetes.max_replicas=0",
            ],
            "kubernetes.max_replicas",
        ),
        (
            [
                "k8s",
                "--config",
                "configs/deployments/medgemma-4b-it.yaml",
                "--set",
                "kubernetes.replicas=5",
            ],
            "kubernetes.max_replicas: 4 is below kubernetes.replicas (5)",
        ),
        (
            [
                "ray",
                "--config",
                "configs/deployments/medgemma-4b-it-dp4.yaml",
                "--set",
                "data_parallel_size=2",
                "--set",
                "tensor_parallel_size=3",
                "--set",
                "nodes=2",
            ],
            "tensor_parallel_size: 3",
        ),
        (
            [
                "k8s",
                "--config",
                "configs/deployments/medgemma-27b-it-tp4.yaml",
                "--set",
                "tensor_parallel_size=2",
                "--set",
                "data_parallel_size=3",
                "--set",
                "nodes=2",
            ],
            "data_parallel_size: 3 replicas cannot be spread evenly over 2 nodes",
        ),
        (["k8s", "--config", "configs/nope.yaml"], "config file not found"),
        (
            [
                "k8s",
                "--config",
                "configs/deployments/medgemma-1.5-4b-it-volumes.yaml",
                "--set",
                "kubernetes.shm_gib=8",
            ],
            "kubernetes.shm_gib: 8 GiB of /dev/shm cannot hold",
        ),
    ],
)
def test_bad_input_names_the_field(
    args: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from serve.__main__ import main

    monkeypatch.chdir(REPO)  # the configs/ paths are relative
    out = run_main(main, ["render", *args], capsys)  # `python -m serve render ARGS`
    assert out.returncode == 2, out
    assert out.stderr.startswith("error: ") and needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr


def test_the_local_launcher_refuses_a_multi_node_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve.__main__ import main

    monkeypatch.setenv("MEDGEMMA_API_KEY", "k")  # host 0.0.0.0 needs a key first

    config = CONFIGS / "medgemma-27b-it-2nodes.yaml"
    out = run_main(main, ["--config", str(config), "--dry-run"], capsys)
    assert out.returncode == 2, out
    assert out.stderr.startswith("error: nodes: 2 nodes cannot be started"), out.stderr
    assert "render ray|k8s" in out.stderr


def test_stand_in_needs_a_folder_to_render_for_ray() -> None:
    with pytest.raises(RenderError, match="stand_in"):
        render_ray(load_config(CONFIGS / "cpu-tiny.yaml"))
