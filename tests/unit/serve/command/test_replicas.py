"""Replicas behind vllm-router without a server: config validation, placement, per-replica
configs, the router's command line (checked by vllm-router's own parser), and the
launcher's one-line errors for input it refuses before starting anything."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from serve.command.argv import check_vllm_argv, to_server_env, to_vllm_argv
from serve.command.replicas import (
    PlacementError,
    check_router_argv,
    cpu_placement,
    gpu_placement,
    ports,
    replica_configs,
    replica_url,
    router_argv,
)
from serve.config.deployment import ConfigError, load_config
from serve.launch import cli
from tests.conftest import REPO

REPO = REPO
CPU = REPO / "configs" / "deployments" / "cpu-tiny-2replicas.yaml"
GPU = REPO / "configs" / "deployments" / "medgemma-4b-it-4replicas.yaml"


def error_of(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    return str(info.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["router.policy=fastest"], "router.policy: Input should be 'random', 'round_robin'"),
        (["router.policy=kv_aware"], "router.policy"),
        (['replicas.cpus=["0", "1", "2"]'], "replicas.cpus: 3 entries for replicas.count 2"),
        (['replicas.cpus=["0", "0-1"]'], "replicas.cpus: core(s) [0] are given to two replicas"),
        (['replicas.cpus=["0", "one"]'], "'one' is not a core list"),
        (['replicas.gpus=["0", "1"]'], "replicas.gpus: applies to device: cuda only"),
        (["cpu_omp_threads_bind=0|1"], "cpu_omp_threads_bind: with `replicas:`"),
        (["tensor_parallel_size=2"], "replicas.cpus: replica 0 has 1 core group(s)"),
        (["data_parallel_size=2"], "data_parallel_size: replicas are the data parallelism"),
        (["kubernetes.replicas=3"], "kubernetes.replicas: with `replicas:` the count is"),
        (["replicas.count=0"], "replicas.count: Input should be greater than or equal to 1"),
        (["router.retries.jitter_factor=2"], "router.retries.jitter_factor"),
        (["router.health_check.endpoint=health"], "router.health_check.endpoint"),
    ],
)
def test_bad_replica_and_router_settings_name_the_field(
    overrides: list[str], expected: str
) -> None:
    assert expected in error_of(CPU, *overrides)


def test_router_without_replicas_is_refused() -> None:
    cpu_tiny = REPO / "configs" / "deployments" / "cpu-tiny.yaml"
    assert "router: applies only with `replicas:`" in error_of(cpu_tiny, "router.policy=random")


def test_gpu_lists_must_match_the_parallelism() -> None:
    msg = error_of(GPU, "tensor_parallel_size=2")
    assert "replicas.gpus: replica 0 has 1 GPU(s), but tensor_parallel_size" in msg, msg
    assert "replicas.cpus: applies to device: cpu only" in error_of(GPU, 'replicas.cpus=["0"]')


def test_ports_default_to_the_ones_after_the_edges() -> None:
    p = ports(load_config(CPU, ["port=9000"]))
    assert (p.edge, p.replicas, p.metrics, p.router, p.authz) == (
        9000,
        [9001, 9002],
        9003,
        9004,
        9005,
    )
    p = ports(load_config(CPU, ["replicas.first_port=9100", "router.metrics_port=9200"]))
    assert (p.edge, p.replicas, p.metrics, p.router, p.authz) == (
        8000,
        [9100, 9101],
        9200,
        9201,
        9202,
    )


def test_cpu_placement_uses_the_listed_cores_or_splits_the_machines() -> None:
    cfg = load_config(CPU)
    assert cpu_placement(cfg, {0, 1}) == ["0", "1"]
    with pytest.raises(
        PlacementError, match=r"replicas.cpus: replica 1 is bound to core\(s\) \[1\]"
    ):
        cpu_placement(cfg, {0})
    auto = load_config(CPU, ["replicas.cpus=null", "replicas.count=2"])
    assert cpu_placement(auto, range(8)) == ["0,1,2,3", "4,5,6,7"]
    tp = load_config(CPU, ["replicas.cpus=null", "tensor_parallel_size=2"])
    assert cpu_placement(tp, range(4)) == ["0|1", "2|3"]
    three = load_config(CPU, ["replicas.cpus=null", "replicas.count=3"])
    with pytest.raises(
        PlacementError, match="replicas.count: 3 replicas x 1 rank.s. need 3 cores; "
    ):
        cpu_placement(three, {0, 1})


def test_gpu_placement() -> None:
    cfg = load_config(GPU)
    assert gpu_placement(cfg, 4) == ["0", "1", "2", "3"]
    with pytest.raises(
        PlacementError, match="replicas.gpus: replica 2 uses GPU.s. 2; this machine has 2"
    ):
        gpu_placement(cfg, 2)
    auto = load_config(GPU, ["replicas.gpus=null", "replicas.count=2", "tensor_parallel_size=2"])
    assert gpu_placement(auto, 4) == ["0,1", "2,3"]
    with pytest.raises(PlacementError, match="replicas.count: 2 replicas x 2 GPU.s. need 4 GPUs"):
        gpu_placement(auto, 3)


def test_each_replica_is_the_deployment_on_its_own_port_and_cores() -> None:
    cfg = load_config(CPU, ["host=0.0.0.0"])
    reps = replica_configs(cfg, ["0", "1"])
    assert [(r.host, r.port, r.cpu_omp_threads_bind) for r in reps] == [
        ("127.0.0.1", 8001, "0"),
        ("127.0.0.1", 8002, "1"),
    ]
    assert all(r.replicas is None for r in reps)
    env = to_server_env(reps[1], {"MEDGEMMA_API_KEY": "k"})
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1" and env["VLLM_API_KEY"] == "k", env
    assert check_vllm_argv(to_vllm_argv(reps[0], "/models/x")) is None
    gpu = replica_configs(load_config(GPU), ["0", "1", "2", "3"])
    assert [to_server_env(r, {})["CUDA_VISIBLE_DEVICES"] for r in gpu] == ["0", "1", "2", "3"]


def flag_value(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_router_argv_passes_vllm_routers_parser() -> None:
    cfg = load_config(CPU, ["port=9000"])
    urls = [replica_url(r) for r in replica_configs(cfg, ["0", "1"])]
    argv = router_argv(cfg, urls)
    assert check_router_argv(argv) is None, check_router_argv(argv)
    assert argv[argv.index("--worker-urls") + 1 : argv.index("--worker-urls") + 3] == [
        "http://127.0.0.1:9001",
        "http://127.0.0.1:9002",
    ]
    # On loopback, behind the edge (nginx on 9000): its management routes stay unreachable.
    assert flag_value(argv, "--host") == "127.0.0.1", argv
    assert flag_value(argv, "--port") == "9004" and flag_value(argv, "--prometheus-port") == "9003"
    assert flag_value(argv, "--policy") == "round_robin"
    assert flag_value(argv, "--health-check-interval-secs") == "5"
    assert "--api-key" not in argv, "the key would be on the router's command line"
    off = load_config(CPU, ["router.retries.enabled=false", "router.circuit_breaker.enabled=false"])
    argv = router_argv(off, urls)
    assert "--disable-retries" in argv and "--disable-circuit-breaker" in argv, argv
    assert "--retry-max-retries" not in argv and "--cb-failure-threshold" not in argv, argv
    assert check_router_argv(argv) is None
    assert check_router_argv(["--policy", "fastest"]) is not None  # the check can fail


def test_dry_run_prints_every_replica_and_the_router(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(CPU), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("vllm.entrypoints.openai.api_server") == 2, out
    assert "# replica 0" in out and "# replica 1" in out and "# router" in out, out
    assert "VLLM_CPU_OMP_THREADS_BIND=1" in out and "--port 8002" in out, out
    assert "vllm_router.launch_router --host 127.0.0.1 --port 8004" in out, out
    assert "# edge: nginx on 127.0.0.1:8000" in out and "serve.edge.authz --port 8005" in out, out


def launcher_error(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["--config", str(CPU), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return code, err[0]


def test_more_replicas_than_cores_is_refused_before_starting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = launcher_error(capsys, "--set", 'replicas.cpus=["0", "4096"]')
    assert code == 2 and err.startswith("error: replicas.cpus: replica 1 is bound to"), err
    code, err = launcher_error(
        capsys, "--set", "replicas.cpus=null", "--set", "replicas.count=4097"
    )
    assert code == 2 and err.startswith("error: replicas.count: 4097 replicas"), err


@pytest.mark.parametrize(("offset", "field"), [(0, "port"), (2, "replicas.first_port")])
def test_a_port_in_use_is_named_before_starting(
    capsys: pytest.CaptureFixture[str], offset: int, field: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1] - offset
        code, err = launcher_error(capsys, "--port", str(port))
    assert code == 1 and err.startswith(f"error: {field}: port {port + offset} "), err
    assert "already in use" in err, err


def test_router_settings_are_documented() -> None:
    from serve.config.replicas import RouterSettings

    def walk(model: Any) -> list[str]:
        missing = []
        for name, f in model.model_fields.items():
            if not f.description:
                missing.append(name)
            ann = f.annotation
            if hasattr(ann, "model_fields"):
                missing += walk(ann)
        return missing

    assert walk(RouterSettings) == []
