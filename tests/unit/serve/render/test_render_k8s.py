"""Rendering for Kubernetes: every GPU config validated against the schemas, the pod a GPU
server needs, multi-node as a LeaderWorkerSet, replicas behind vllm-router."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from serve.command.argv import check_vllm_argv
from serve.command.replicas import check_router_argv
from serve.config.deployment import load_config
from serve.launch.probe import build_parser as probe_parser
from serve.render.k8s import render_k8s
from tests.unit.serve.render.render_checks import (
    CONFIGS,
    GPU_CONFIGS,
    K8S_VERSIONS,
    by_kind,
    is_router,
    pod_labels_of,
    run_render,
    validate_strict,
)

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
