"""Deployment config -> Kubernetes manifests (pure): a list of plain dicts.

One node per replica renders a Deployment; `nodes > 1` renders a LeaderWorkerSet
(leaderworkerset.x-k8s.io/v1, a CRD) whose leader starts the Ray head and vLLM with the
Ray backend and whose workers join it (the commands of `serve.render_ray`). Beside it: a
Namespace, the model-cache PersistentVolumeClaim, a Service, a PodDisruptionBudget and a
HorizontalPodAutoscaler (autoscaling/v2) on vLLM's waiting-requests gauge served through
the custom-metrics API (prometheus-adapter). Secrets (HF token, API key) are referenced
by name, never written.
"""

from __future__ import annotations

import math
import re
import shlex
from typing import Any

from serve.argv import SERVER_MODULE, to_server_env, to_vllm_argv
from serve.config import DeploymentConfig
from serve.render_ray import (
    RenderError,
    check_multi_node,
    ray_backend_flags,
    ray_head_command,
    ray_worker_command,
)

IMAGE_APP_DIR = "/opt/medgemma-serve"  # where deploy/Dockerfile puts this repo's serve/
HF_CACHE = "/root/.cache/huggingface"  # the vLLM image's Hugging Face cache
LWS_API = "leaderworkerset.x-k8s.io/v1"
Manifest = dict[str, Any]


def object_name(cfg: DeploymentConfig) -> str:
    """The objects' name: kubernetes.name, else served_model_name made DNS-safe."""
    if cfg.kubernetes.name:
        return cfg.kubernetes.name
    name = re.sub(r"[^a-z0-9-]+", "-", cfg.model_name.lower()).strip("-")[:63].strip("-")
    return name or "medgemma"


def labels(cfg: DeploymentConfig) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "medgemma-serve",
        "app.kubernetes.io/instance": object_name(cfg),
        "app.kubernetes.io/component": "vllm",
    }


def meta(cfg: DeploymentConfig, suffix: str = "") -> dict[str, Any]:
    return {
        "name": object_name(cfg) + suffix,
        "namespace": cfg.kubernetes.namespace,
        "labels": labels(cfg),
    }


def container_env(cfg: DeploymentConfig) -> list[dict[str, Any]]:
    """The server's environment; PYTHONPATH points into the image, secrets come from
    Secrets, the Hub cache lives on the claim."""
    env = to_server_env(cfg, {})
    if "PYTHONPATH" in env:
        env["PYTHONPATH"] = IMAGE_APP_DIR
    env["HF_HOME"] = HF_CACHE
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
    out.append(secret_env("HF_TOKEN", cfg.kubernetes.hf_token_secret, "token"))
    if cfg.kubernetes.api_key_secret:
        out.append(secret_env("VLLM_API_KEY", cfg.kubernetes.api_key_secret, "api-key"))
    return out


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def resources(cfg: DeploymentConfig) -> dict[str, Any]:
    k = cfg.kubernetes
    amount: dict[str, Any] = {"cpu": k.cpu, "memory": f"{k.memory_gib}Gi"}
    if cfg.device == "cuda":
        amount["nvidia.com/gpu"] = cfg.devices_per_node
    return {"requests": dict(amount), "limits": dict(amount)}


def health_probes(cfg: DeploymentConfig) -> dict[str, Any]:
    """Start-up allows the config's start-up timeout; then readiness gates traffic and
    liveness restarts a hung server."""

    def get() -> dict[str, Any]:  # a fresh dict each: no YAML anchors in the output
        return {"path": "/health", "port": "http"}

    return {
        "startupProbe": {
            "httpGet": get(),
            "periodSeconds": 10,
            "failureThreshold": max(1, math.ceil(cfg.startup_timeout_s / 10)),
        },
        "readinessProbe": {"httpGet": get(), "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": get(),
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }


def pod_spec(cfg: DeploymentConfig, container: dict[str, Any]) -> dict[str, Any]:
    """A pod with the shared-memory and model-cache volumes."""
    k = cfg.kubernetes
    container["resources"] = resources(cfg)
    container["volumeMounts"] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": HF_CACHE},
    ]
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": math.ceil(cfg.drain_timeout_s) + 10,
        "containers": [container],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{k.shm_gib}Gi"}},
            {
                "name": "model-cache",
                "persistentVolumeClaim": {"claimName": object_name(cfg) + "-model-cache"},
            },
        ],
    }
    if k.node_selector:
        spec["nodeSelector"] = dict(k.node_selector)
    if cfg.device == "cuda":
        spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return spec


def server_args(cfg: DeploymentConfig) -> list[str]:
    """vLLM's flags, listening on all pod addresses."""
    return to_vllm_argv(cfg.model_copy(update={"host": "0.0.0.0"}))


def vllm_container(cfg: DeploymentConfig, command: list[str], args: list[str]) -> dict[str, Any]:
    return {
        "name": "vllm",
        "image": cfg.kubernetes.image,
        "command": command,
        "args": args,
        "env": container_env(cfg),
        "ports": [{"name": "http", "containerPort": cfg.port, "protocol": "TCP"}],
    }


def pod_template(cfg: DeploymentConfig, container: dict[str, Any], role: str) -> dict[str, Any]:
    annotations = {}
    if role in ("server", "leader"):
        annotations = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(cfg.port),
            "prometheus.io/path": "/metrics",
        }
    metadata: dict[str, Any] = {"labels": {**labels(cfg), "medgemma-serve/role": role}}
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": pod_spec(cfg, container)}


def deployment(cfg: DeploymentConfig) -> Manifest:
    container = vllm_container(cfg, ["python3", "-m", SERVER_MODULE], server_args(cfg))
    container.update(health_probes(cfg))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(cfg),
        "spec": {
            "replicas": cfg.kubernetes.replicas,
            "selector": {"matchLabels": {**labels(cfg), "medgemma-serve/role": "server"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": pod_template(cfg, container, "server"),
        },
    }


def leader_worker_set(cfg: DeploymentConfig) -> Manifest:
    """Ray head + vLLM in the leader, `ray start --block` in each worker. LWS gives every
    pod LWS_LEADER_ADDRESS; the kubelet expands $(LWS_LEADER_ADDRESS) in the args."""
    port = cfg.ray.port
    wait = (
        f'until [ "$(ray status 2>/dev/null | grep -c " node_")" -ge {cfg.nodes} ]; '
        "do echo waiting for the Ray workers; sleep 5; done"
    )
    serve = ["python3", "-m", SERVER_MODULE, *server_args(cfg), *ray_backend_flags(cfg)]
    leader_script = " && ".join(
        [
            shlex.join(ray_head_command(cfg)),
            wait,
            f"export RAY_ADDRESS=127.0.0.1:{port}",
            "exec " + shlex.join(serve),
        ]
    )
    leader = vllm_container(cfg, ["bash", "-c"], [leader_script])
    leader.update(health_probes(cfg))
    worker_cmd = ray_worker_command(cfg, f"$(LWS_LEADER_ADDRESS):{port}")
    worker = vllm_container(cfg, ["bash", "-c"], [shlex.join(worker_cmd)])
    del worker["ports"]
    return {
        "apiVersion": LWS_API,
        "kind": "LeaderWorkerSet",
        "metadata": meta(cfg),
        "spec": {
            "replicas": cfg.kubernetes.replicas,
            "leaderWorkerTemplate": {
                "size": cfg.nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": pod_template(cfg, leader, "leader"),
                "workerTemplate": pod_template(cfg, worker, "worker"),
            },
        },
    }


def namespace(cfg: DeploymentConfig) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": cfg.kubernetes.namespace, "labels": labels(cfg)},
    }


def model_cache_claim(cfg: DeploymentConfig) -> Manifest:
    """The Hugging Face cache, shared by every pod that may run at once (ReadWriteMany)."""
    k = cfg.kubernetes
    shared = k.max_replicas > 1 or cfg.nodes > 1
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany" if shared else "ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{k.model_cache_gib}Gi"}},
    }
    if k.storage_class:
        spec["storageClassName"] = k.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(cfg, "-model-cache"),
        "spec": spec,
    }


def serving_role(cfg: DeploymentConfig) -> str:
    return "leader" if cfg.nodes > 1 else "server"


def service(cfg: DeploymentConfig) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(cfg),
        "spec": {
            "type": cfg.kubernetes.service_type,
            "selector": {**labels(cfg), "medgemma-serve/role": serving_role(cfg)},
            "ports": [{"name": "http", "port": cfg.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(cfg: DeploymentConfig) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(cfg),
        "spec": {
            "maxUnavailable": cfg.kubernetes.max_unavailable,
            "selector": {"matchLabels": labels(cfg)},
        },
    }


def autoscaler(cfg: DeploymentConfig) -> Manifest:
    """Scale replicas on the average of vllm:num_requests_waiting per serving pod."""
    k = cfg.kubernetes
    target = (
        {"apiVersion": LWS_API, "kind": "LeaderWorkerSet"}
        if cfg.nodes > 1
        else {"apiVersion": "apps/v1", "kind": "Deployment"}
    )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(cfg),
        "spec": {
            "scaleTargetRef": {**target, "name": object_name(cfg)},
            "minReplicas": k.replicas,
            "maxReplicas": k.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": k.waiting_metric},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": f"{k.target_waiting_requests:g}",
                        },
                    },
                }
            ],
            # A new GPU replica takes minutes to load; do not give it back at once.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}},
        },
    }


def render_k8s(cfg: DeploymentConfig) -> list[Manifest]:
    """Every manifest of the deployment, in apply order. Raises RenderError."""
    if cfg.stand_in is not None:
        raise RenderError(
            "stand_in: the random-weight stand-in is built on this machine and cannot be "
            "served by a Kubernetes pod; set `model` to a hub id (or a path on the image)"
        )
    if cfg.kubernetes.max_replicas < cfg.kubernetes.replicas:
        raise RenderError(
            f"kubernetes.max_replicas: {cfg.kubernetes.max_replicas} is below "
            f"kubernetes.replicas ({cfg.kubernetes.replicas})"
        )
    check_multi_node(cfg)
    workload = leader_worker_set(cfg) if cfg.nodes > 1 else deployment(cfg)
    return [
        namespace(cfg),
        model_cache_claim(cfg),
        workload,
        service(cfg),
        disruption_budget(cfg),
        autoscaler(cfg),
    ]
