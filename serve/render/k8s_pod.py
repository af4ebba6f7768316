"""The pod of a rendered Kubernetes deployment (pure): names, labels, the vLLM container
with its environment (secrets by reference), GPU resources, /dev/shm and model-cache
volumes, the TLS Secret's mount, the /health probes and the image + text readiness probe
(serve.launch.probe). `serve.render.k8s` wraps it in the workload objects.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from serve.command.argv import probes_images, to_server_env, to_vllm_argv
from serve.config.deployment import DeploymentConfig

HF_CACHE = "/root/.cache/huggingface"  # the vLLM image's Hugging Face cache
# Where kubernetes.tls_secret is mounted; a kubernetes.io/tls Secret holds tls.crt and tls.key.
TLS_DIR = "/etc/medgemma-serve/tls"
TLS_CERT = f"{TLS_DIR}/tls.crt"
TLS_KEY = f"{TLS_DIR}/tls.key"
INTERNAL_KEY_FIELD = "internal-key"  # the key in kubernetes.internal_key_secret


def serves_tls(cfg: DeploymentConfig) -> bool:
    """The vLLM pods serve HTTPS: with kubernetes.tls_secret (ssl_certfile is a local path
    and is refused without it, serve.render.k8s_checks), unless they are a `replicas:`
    deployment's, whose edge serves it instead (`edge_serves_tls`)."""
    return cfg.kubernetes.tls_secret is not None and cfg.replicas is None


def edge_serves_tls(cfg: DeploymentConfig) -> bool:
    """The edge in the router pod serves HTTPS (kubernetes.tls_secret with `replicas:`):
    vllm-router's service discovery reaches the replica pods over plain http only, so TLS
    ends at the edge, and the NetworkPolicy and the internal key guard the pods behind."""
    return cfg.kubernetes.tls_secret is not None and cfg.replicas is not None


def tls_volume(secret: str) -> dict[str, Any]:
    """The TLS Secret as a volume: 0400, readable by the container's user (root) only."""
    return {"name": "tls", "secret": {"secretName": secret, "defaultMode": 0o400}}


TLS_MOUNT = {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}


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


def serving_role(cfg: DeploymentConfig) -> str:
    """The role label of the pods that serve HTTP: a LeaderWorkerSet's leaders, else all."""
    return "leader" if cfg.nodes > 1 else "server"


def meta(cfg: DeploymentConfig, suffix: str = "") -> dict[str, Any]:
    return {
        "name": object_name(cfg) + suffix,
        "namespace": cfg.kubernetes.namespace,
        "labels": labels(cfg),
    }


def container_env(cfg: DeploymentConfig) -> list[dict[str, Any]]:
    """The server's environment; secrets come from Secrets, the Hub cache lives on the claim."""
    env = to_server_env(cfg, {})
    env["HF_HOME"] = HF_CACHE
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
    out.append(secret_env("HF_TOKEN", cfg.kubernetes.hf_token_secret, "token"))
    key = server_key(cfg)
    if key is not None:
        out.append(secret_env("VLLM_API_KEY", *key))
    return out


def server_key(cfg: DeploymentConfig) -> tuple[str, str] | None:
    """The Secret and its key the vLLM pods take their API key from: behind the router,
    the internal key only the edge sends (serve.render.k8s_edge); else api_key_secret."""
    if cfg.replicas is not None:
        return cfg.kubernetes.internal_key_secret, INTERNAL_KEY_FIELD
    if cfg.kubernetes.api_key_secret:
        return cfg.kubernetes.api_key_secret, "api-key"
    return None


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def resources(cfg: DeploymentConfig) -> dict[str, Any]:
    k = cfg.kubernetes
    amount: dict[str, Any] = {"cpu": k.cpu, "memory": f"{k.memory_gib}Gi"}
    if cfg.device == "cuda":
        amount["nvidia.com/gpu"] = cfg.devices_per_node
    return {"requests": dict(amount), "limits": dict(amount)}


READINESS_PERIOD_S = 15
READINESS_TIMEOUT_S = 60  # an image request on a busy server can take seconds
PROBE_TIMEOUT_S = 50  # the probe's own limit: it prints its line before the kubelet's ends it


def readiness_command(cfg: DeploymentConfig) -> list[str]:
    """The readiness probe the pod runs (serve.launch.probe): one image + text chat
    completion to its own server (text only for a model that takes no images), with the
    key the server was given (VLLM_API_KEY, from the Secret of server_key)."""
    scheme = "https" if serves_tls(cfg) else "http"
    cmd = [
        "python3",
        "-m",
        "serve",
        "probe",
        "--base-url",
        f"{scheme}://127.0.0.1:{cfg.port}/v1",
        "--model",
        cfg.model_name,
        "--timeout",
        str(PROBE_TIMEOUT_S),
    ]
    if server_key(cfg) is not None:
        cmd += ["--api-key-env", "VLLM_API_KEY"]
    if not probes_images(cfg.limit_mm_per_prompt):
        cmd.append("--text-only")
    if serves_tls(cfg):
        cmd.append("--insecure")  # its own certificate need not name 127.0.0.1
    return cmd


def health_probes(cfg: DeploymentConfig) -> dict[str, Any]:
    """Start-up allows the config's start-up timeout and liveness restarts a hung server
    (both GET /health); readiness gates traffic on one image + text request succeeding."""

    def get() -> dict[str, Any]:  # a fresh dict each: no YAML anchors in the output
        action: dict[str, Any] = {"path": "/health", "port": "http"}
        if serves_tls(cfg):
            action["scheme"] = "HTTPS"
        return action

    return {
        "startupProbe": {
            "httpGet": get(),
            "periodSeconds": 10,
            "failureThreshold": max(1, math.ceil(cfg.startup_timeout_s / 10)),
        },
        "readinessProbe": {
            "exec": {"command": readiness_command(cfg)},
            "periodSeconds": READINESS_PERIOD_S,
            "timeoutSeconds": READINESS_TIMEOUT_S,
            "failureThreshold": 3,
        },
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
    if serves_tls(cfg) and k.tls_secret is not None:
        container["volumeMounts"].append(dict(TLS_MOUNT))
        spec["volumes"].append(tls_volume(k.tls_secret))
    if k.node_selector:
        spec["nodeSelector"] = dict(k.node_selector)
    if cfg.device == "cuda":
        spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return spec


def server_args(cfg: DeploymentConfig) -> list[str]:
    """vLLM's flags, listening on all pod addresses, with the TLS Secret's files."""
    tls = (Path(TLS_CERT), Path(TLS_KEY)) if serves_tls(cfg) else (None, None)
    update = {"host": "0.0.0.0", "ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
    return to_vllm_argv(cfg.model_copy(update=update))


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
