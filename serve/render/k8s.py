"""Deployment config -> Kubernetes manifests (pure): a list of plain dicts.

One node per replica renders a Deployment; `nodes > 1` renders a LeaderWorkerSet
(leaderworkerset.x-k8s.io/v1, a CRD) whose leader starts the Ray head and vLLM with the
Ray backend and whose workers join it (the commands of `serve.render.ray`); its pods are
placed by `gpu_type` (serve.render.k8s_placement). A `replicas:` config adds vllm-router in
front of the replica pods (serve.render.k8s_router). Beside it: a Namespace, the
model-cache PersistentVolumeClaim, a Service, a NetworkPolicy (serve.render.k8s_network), a
PodDisruptionBudget and a HorizontalPodAutoscaler (autoscaling/v2) on vLLM's
waiting-requests gauge served through the custom-metrics API (prometheus-adapter); last
the monitoring (serve.render.k8s_monitor: PodMonitors, a PrometheusRule, the Grafana
dashboard as a ConfigMap). Secrets (HF token, API key, TLS certificate; with `replicas:`
the service keys file and the replicas' internal key, serve.render.k8s_edge) are
referenced by name, never written.
"""

from __future__ import annotations

import shlex
from typing import Any

from serve.command.argv import SERVER_MODULE
from serve.config.deployment import DeploymentConfig
from serve.render.alerts import AlertThresholds
from serve.render.k8s_checks import check_production
from serve.render.k8s_monitor import monitoring_manifests
from serve.render.k8s_network import network_policy
from serve.render.k8s_placement import node_affinity, place
from serve.render.k8s_pod import (
    health_probes,
    labels,
    meta,
    object_name,
    pod_template,
    server_args,
    serving_role,
    vllm_container,
)
from serve.render.k8s_router import router_labels, router_manifests
from serve.render.ray import (
    RenderError,
    check_multi_node,
    on_ray,
    ray_backend_flags,
    ray_head_command,
    ray_worker_command,
)

LWS_API = "leaderworkerset.x-k8s.io/v1"
Manifest = dict[str, Any]


def deployment(cfg: DeploymentConfig) -> Manifest:
    container = vllm_container(cfg, ["python3", "-m", SERVER_MODULE], server_args(cfg))
    container.update(health_probes(cfg))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(cfg),
        "spec": {
            "replicas": replica_count(cfg),
            "selector": {"matchLabels": {**labels(cfg), "medgemma-serve/role": "server"}},
            "strategy": rollout_strategy(cfg),
            "template": pod_template(cfg, container, "server"),
        },
    }


def rollout_strategy(cfg: DeploymentConfig) -> dict[str, Any]:
    """One pod at a time: a surge pod first (needs a free GPU), or with max_surge 0 the old
    pod stopped first (a one-GPU cluster, where a surge pod would wait Pending for ever)."""
    surge = cfg.kubernetes.max_surge
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": 0 if surge else 1},
    }


def replica_count(cfg: DeploymentConfig) -> int:
    """Serving pods at start: replicas.count behind the router, else kubernetes.replicas."""
    return cfg.replicas.count if cfg.replicas is not None else cfg.kubernetes.replicas


def leader_worker_set(cfg: DeploymentConfig) -> Manifest:
    """Ray head + vLLM in the leader, `ray start --block` in each worker. LWS gives every
    pod LWS_LEADER_ADDRESS; the kubelet expands $(LWS_LEADER_ADDRESS) in the args."""
    port = cfg.ray.port
    wait = (
        f'until [ "$(ray status 2>/dev/null | grep -c " node_")" -ge {cfg.nodes} ]; '
        "do echo waiting for the Ray workers; sleep 5; done"
    )
    serve = ["python3", "-m", SERVER_MODULE, *server_args(on_ray(cfg)), *ray_backend_flags(cfg)]
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


def service(cfg: DeploymentConfig) -> Manifest:
    """The clients' entry point: with `replicas:` the router pods' edge (nginx, the only
    container with the `http` port), else the vLLM pods."""
    selector = (
        router_labels(cfg)
        if cfg.replicas is not None
        else {**labels(cfg), "medgemma-serve/role": serving_role(cfg)}
    )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(cfg),
        "spec": {
            "type": cfg.kubernetes.service_type,
            "selector": selector,
            "ports": [{"name": "http", "port": cfg.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(cfg: DeploymentConfig) -> Manifest:
    """maxUnavailable (at least 1, by the schema), never minAvailable: with one replica
    on a one-GPU cluster a drain may still evict it (the API is down until it is
    rescheduled, which is what draining the only GPU node means), where minAvailable 1 or
    maxUnavailable 0 would block `kubectl drain` for ever. A pod that is not Ready serves
    nothing, so it may always be evicted (AlwaysAllow): a replica stuck loading or
    crash-looping does not hold a node upgrade hostage."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(cfg),
        "spec": {
            "maxUnavailable": cfg.kubernetes.max_unavailable,
            "selector": {"matchLabels": labels(cfg)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
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
            "minReplicas": replica_count(cfg),
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


def render_k8s(cfg: DeploymentConfig, thresholds: AlertThresholds | None = None) -> list[Manifest]:
    """Every manifest of the deployment, in apply order; `thresholds` are the alerts'.
    Raises RenderError."""
    if cfg.stand_in is not None:
        raise RenderError(
            "stand_in: the random-weight stand-in is built on this machine and cannot be "
            "served by a Kubernetes pod; set `model` to a hub id (or a path on the image)"
        )
    if cfg.kubernetes.max_replicas < replica_count(cfg):
        field = "replicas.count" if cfg.replicas is not None else "kubernetes.replicas"
        raise RenderError(
            f"kubernetes.max_replicas: {cfg.kubernetes.max_replicas} is below "
            f"{field} ({replica_count(cfg)})"
        )
    check_multi_node(cfg)
    if cfg.nodes == 1 and cfg.mm_processor_cache_gb >= cfg.kubernetes.shm_gib:
        raise RenderError(
            f"kubernetes.shm_gib: {cfg.kubernetes.shm_gib} GiB of /dev/shm cannot hold "
            f"vLLM's processed-image cache (mm_processor_cache_gb {cfg.mm_processor_cache_gb:g}"
            ", kept in shared memory) and leave room for the workers: raise shm_gib"
        )
    gpu = check_production(cfg)
    workload = leader_worker_set(cfg) if cfg.nodes > 1 else deployment(cfg)
    place(workload, node_affinity(cfg, gpu))
    router = router_manifests(cfg) if cfg.replicas is not None else []
    policy = [network_policy(cfg)] if cfg.kubernetes.network_policy.enabled else []
    return [
        namespace(cfg),
        model_cache_claim(cfg),
        *router,
        workload,
        service(cfg),
        *policy,
        disruption_budget(cfg),
        autoscaler(cfg),
        *monitoring_manifests(cfg, thresholds),
    ]
