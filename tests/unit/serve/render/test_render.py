"""Rendering for Ray and Kubernetes: every shipped config, schema validation, bad input."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from serve.command.argv import check_vllm_argv
from serve.command.replicas import check_router_argv
from serve.config.deployment import load_config
from serve.launch.probe import build_parser as probe_parser
from serve.render.k8s import render_k8s
from serve.render.k8s_monitor import MONITORING_API
from serve.render.ray import RenderError, env_assignments, render_ray, to_script
from tests.conftest import REPO
from tests.in_process import run_main
from tests.unit.serve.render.test_k8s_monitor import validate_crd

REPO = REPO
CONFIGS = REPO / "configs" / "deployments"
DEPLOYMENTS = sorted(CONFIGS.glob("*.yaml"))
GPU_CONFIGS = [p for p in DEPLOYMENTS if load_config(p).device == "cuda"]
# The oldest Kubernetes still widely run, and the newest schema the package ships.
K8S_VERSIONS = ["1.29", kubernetes_validate.latest_version()]


def run_render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve", "render", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The manifests by kind, leaving out vllm-router's (serve.render.k8s_router)."""
    return {m["kind"]: m for m in manifests if not is_router(m)}


def is_router(manifest: dict[str, Any]) -> bool:
    return manifest["metadata"]["labels"].get("medgemma-serve/role") == "router"


def validate_strict(manifest: dict[str, Any], version: str) -> None:
    """Built-in kinds against their schema; the Prometheus Operator's CRDs against theirs
    (tests/unit/serve/render/test_k8s_monitor.py); the LeaderWorkerSet CRD (no schema
    shipped) through its two embedded pod templates, each as a core/v1 PodTemplate."""
    if manifest["apiVersion"] == MONITORING_API:
        validate_crd(manifest)
        return
    if manifest["kind"] != "LeaderWorkerSet":
        kubernetes_validate.validate(manifest, version, strict=True)
        return
    lwt = manifest["spec"]["leaderWorkerTemplate"]
    assert set(lwt) == {"size", "restartPolicy", "leaderTemplate", "workerTemplate"}, lwt
    for role in ("leaderTemplate", "workerTemplate"):
        wrapper = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{manifest['metadata']['name']}-{role.lower()}"},
            "template": lwt[role],
        }
        kubernetes_validate.validate(wrapper, version, strict=True)


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


# --- Kubernetes --------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.stem)
def test_k8s_manifests_validate_against_the_schemas(path: Path, version: str) -> None:
    manifests = render_k8s(load_config(path))
    for m in manifests:
        try:
            validate_strict(m, version)
        except kubernetes_validate.ValidationError as exc:
            path_s = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name} {m['kind']} invalid for {version}: {path_s}: {exc.message}")


def test_the_validator_is_strict() -> None:
    """A control: a typo'd field and a wrong type are rejected, so passing means something."""
    dep = by_kind(render_k8s(load_config(CONFIGS / "medgemma-4b-it.yaml")))["Deployment"]
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"path": "/health"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[-1], strict=True)
    hpa = by_kind(render_k8s(load_config(CONFIGS / "medgemma-4b-it.yaml")))[
        "HorizontalPodAutoscaler"
    ]
    hpa["spec"]["maxReplicas"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.stem)
def test_k8s_pod_has_what_a_gpu_server_needs(path: Path) -> None:
    cfg = load_config(path)
    kinds = by_kind(render_k8s(cfg))
    assert set(kinds) >= {
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
    }, set(kinds)
    if cfg.nodes > 1:
        templates = kinds["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
        pod = templates["leaderTemplate"]["spec"]
    else:
        pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == cfg.devices_per_node, c["resources"]
    assert c["resources"]["requests"] == c["resources"]["limits"], c["resources"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", volumes
    claim = volumes[mounts["/root/.cache/huggingface"]]["persistentVolumeClaim"]["claimName"]
    assert claim == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    env = {e["name"]: e for e in c["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == cfg.kubernetes.hf_token_secret
    assert "value" not in env["VLLM_API_KEY"], "the API key comes from a Secret, never a value"
    for probe in ("livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] == "/health", c[probe]
    ready = c["readinessProbe"]
    cmd = ready["exec"]["command"]
    assert cmd[:4] == ["python3", "-m", "serve", "probe"], ready
    args = probe_parser().parse_args(cmd[4:])  # the probe's own parser accepts it
    assert (args.model, args.base_url) == (cfg.model_name, f"http://127.0.0.1:{cfg.port}/v1")
    takes_images = cfg.limit_mm_per_prompt.get("image", 0) > 0
    assert args.text_only == (not takes_images), (cfg.limit_mm_per_prompt, cmd)
    assert args.api_key_env == "VLLM_API_KEY", cmd
    assert args.timeout < ready["timeoutSeconds"] <= ready["periodSeconds"] * 4, ready
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "vllm_num_requests_waiting", hpa
    assert hpa["scaleTargetRef"]["kind"] == ("LeaderWorkerSet" if cfg.nodes > 1 else "Deployment")
    service_sel = kinds["Service"]["spec"]["selector"]
    if cfg.replicas is not None:  # clients reach the router, which reaches the replicas
        router = next(m for m in render_k8s(cfg) if is_router(m) and m["kind"] == "Deployment")
        pod_labels = router["spec"]["template"]["metadata"]["labels"]
    else:
        pod_labels = (
            templates["leaderTemplate"]
            if cfg.nodes > 1
            else kinds["Deployment"]["spec"]["template"]
        )["metadata"]["labels"]
    assert service_sel.items() <= pod_labels.items(), (service_sel, pod_labels)


def test_k8s_single_node_args_pass_vllms_parser() -> None:
    dep = by_kind(render_k8s(load_config(CONFIGS / "medgemma-27b-it-tp4.yaml")))["Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"][c["args"].index("--host") + 1] == "0.0.0.0"
    assert check_vllm_argv(c["args"]) is None


def test_k8s_multi_node_is_a_leader_worker_set_on_ray() -> None:
    cfg = load_config(CONFIGS / "medgemma-27b-it-2nodes.yaml")
    kinds = by_kind(render_k8s(cfg))
    assert "Deployment" not in kinds
    lwt = kinds["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    assert lwt["size"] == 2
    leader = lwt["leaderTemplate"]["spec"]["containers"][0]["args"][0]
    worker = lwt["workerTemplate"]["spec"]["containers"][0]["args"][0]
    assert leader.startswith("ray start") and "--head" in leader, leader
    assert "--distributed-executor-backend ray" in leader, leader
    assert "--pipeline-parallel-size 2" in leader and "--tensor-parallel-size 4" in leader
    assert "--address=$(LWS_LEADER_ADDRESS):6379" in worker and "--block" in worker, worker
    serve = shlex.split(leader.split("exec ", 1)[1])
    assert check_vllm_argv(serve[3:]) is None
    assert subprocess.run(["bash", "-n", "-c", leader]).returncode == 0, leader


def test_k8s_cli_stdout_and_out_dir(tmp_path: Path) -> None:
    cfg_path = str(CONFIGS / "medgemma-4b-it.yaml")
    out = run_render("k8s", "--config", cfg_path)
    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    assert [d["kind"] for d in docs] == [m["kind"] for m in render_k8s(load_config(cfg_path))]
    written = run_render("k8s", "--config", cfg_path, "--out", str(tmp_path / "k8s"))
    assert written.returncode == 0, written.stderr
    files = sorted((tmp_path / "k8s").glob("*.yaml"))
    assert [yaml.safe_load(f.read_text()) for f in files] == docs, [f.name for f in files]


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


# --- vllm-router in front of replica pods --------------------------------------------------


def test_k8s_replicas_behind_the_router_find_them_by_label() -> None:
    cfg = load_config(CONFIGS / "medgemma-4b-it-4replicas.yaml")
    manifests = render_k8s(cfg)
    for m in manifests:
        for version in K8S_VERSIONS:
            validate_strict(m, version)
    router = {m["kind"]: m for m in manifests if is_router(m)}
    router_kinds = {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "PodMonitor",
    }
    assert set(router) == router_kinds, set(router)
    kinds = [m["kind"] for m in manifests]
    assert kinds.index("RoleBinding") < kinds.index("Deployment"), kinds  # RBAC before pods
    replicas = by_kind(manifests)["Deployment"]
    assert replicas["spec"]["replicas"] == 4, replicas["spec"]
    (vllm,) = replicas["spec"]["template"]["spec"]["containers"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1, vllm["resources"]
    assert "CUDA_VISIBLE_DEVICES" not in {e["name"] for e in vllm["env"]}, "the device plugin"
    pod = router["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == router["ServiceAccount"]["metadata"]["name"]
    binding = router["RoleBinding"]
    assert binding["roleRef"]["name"] == router["Role"]["metadata"]["name"], binding
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"], binding
    (rule,) = router["Role"]["rules"]
    assert rule["resources"] == ["pods"] and set(rule["verbs"]) == {"get", "list", "watch"}
    (c,) = [c for c in pod["containers"] if c["name"] == "router"]  # the edge: test_k8s_edge
    args = c["args"]
    assert c["command"] == ["vllm-router"] and "--service-discovery" in args, args
    assert check_router_argv(args) is None, check_router_argv(args)
    # The selector the router watches picks exactly the replica pods' labels.
    sel_end = next(i for i in range(args.index("--selector") + 1, len(args)) if args[i][:2] == "--")
    selector = dict(a.split("=", 1) for a in args[args.index("--selector") + 1 : sel_end])
    replica_labels = replicas["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= replica_labels.items(), (selector, replica_labels)
    assert not selector.items() <= pod_labels_of(router["Deployment"]).items(), selector
    value = args[args.index("--service-discovery-namespace") + 1]
    assert value == cfg.kubernetes.namespace == router["Role"]["metadata"]["namespace"]
    assert args[args.index("--service-discovery-port") + 1] == str(
        vllm["ports"][0]["containerPort"]
    )
    assert args[args.index("--policy") + 1] == "cache_aware", args
    hpa = by_kind(manifests)["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] == 4 and hpa["scaleTargetRef"]["name"] == replicas["metadata"]["name"]


def pod_labels_of(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]
