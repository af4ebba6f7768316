"""vllm-router in front of replica pods, as Kubernetes manifests (pure).

A replicas config renders its replicas as the usual vLLM Deployment (`replicas.count`
pods, labelled `medgemma-serve/role: server`) and, beside it, a router Deployment running
`vllm-router --service-discovery`: the router watches the namespace's pods with those
labels and adds or drops each as it becomes ready or goes away (so the autoscaler's
replicas join on their own). It needs a ServiceAccount with a Role to get, list and watch
pods. The client-facing Service selects the router pods and targets the edge in them
(serve.render.k8s_edge: nginx, and the key check when the config has a key source):
vllm-router listens on the pod's loopback only, so its management routes (/add_worker,
/list_workers, ...) are out of every other pod's reach.
"""

from __future__ import annotations

import math
from typing import Any

from serve.command.argv import flag
from serve.command.replicas import policy_flags, ports
from serve.config.deployment import DeploymentConfig
from serve.render.k8s_edge import edge_config_map, edge_containers, edge_volumes, probe_get
from serve.render.k8s_pod import labels, object_name

Manifest = dict[str, Any]
SUFFIX = "-router"


def router_name(cfg: DeploymentConfig) -> str:
    return object_name(cfg)[: 63 - len(SUFFIX)].rstrip("-") + SUFFIX


def router_labels(cfg: DeploymentConfig) -> dict[str, str]:
    return {**labels(cfg), "app.kubernetes.io/component": "router", "medgemma-serve/role": "router"}


def replica_selector(cfg: DeploymentConfig) -> dict[str, str]:
    """The labels that pick this deployment's vLLM replica pods (and nothing else)."""
    return {"app.kubernetes.io/instance": object_name(cfg), "medgemma-serve/role": "server"}


def router_meta(cfg: DeploymentConfig) -> dict[str, Any]:
    return {
        "name": router_name(cfg),
        "namespace": cfg.kubernetes.namespace,
        "labels": router_labels(cfg),
    }


def router_args(cfg: DeploymentConfig) -> list[str]:
    """vllm-router's flags in the pod: on loopback (the edge beside it is the pod's API
    port), discovering the replica pods by label in the namespace."""
    argv = flag("host", "127.0.0.1") + flag("port", ports(cfg).router)
    argv += ["--service-discovery", "--selector"]
    argv += [f"{k}={v}" for k, v in replica_selector(cfg).items()]
    argv += flag("service_discovery_port", cfg.port)
    argv += flag("service_discovery_namespace", cfg.kubernetes.namespace)
    argv += policy_flags(cfg)
    argv += flag("prometheus_host", "0.0.0.0") + flag("prometheus_port", ports(cfg).metrics)
    return argv


def service_account(cfg: DeploymentConfig) -> Manifest:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": router_meta(cfg)}


def role(cfg: DeploymentConfig) -> Manifest:
    """What the router's service discovery reads: the namespace's pods, nothing more."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": router_meta(cfg),
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    }


def role_binding(cfg: DeploymentConfig) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": router_meta(cfg),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": router_name(cfg),
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": router_name(cfg),
                "namespace": cfg.kubernetes.namespace,
            }
        ],
    }


def router_deployment(cfg: DeploymentConfig) -> Manifest:
    """One router pod (it holds the cache-aware routing state in memory)."""
    metrics = ports(cfg).metrics
    container = {
        "name": "router",
        "image": cfg.router.image or cfg.kubernetes.image,
        "command": ["vllm-router"],
        "args": router_args(cfg),
        "ports": [{"name": "metrics", "containerPort": metrics, "protocol": "TCP"}],
        # Through the edge beside it: the router itself listens on loopback only.
        "livenessProbe": {
            "httpGet": probe_get(cfg, "/liveness"),
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": router_meta(cfg),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": router_labels(cfg)},
            "template": {
                "metadata": {
                    "labels": router_labels(cfg),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(metrics),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": router_name(cfg),
                    "terminationGracePeriodSeconds": math.ceil(cfg.drain_timeout_s) + 10,
                    "containers": [*edge_containers(cfg), container],
                    "volumes": edge_volumes(cfg, router_name(cfg)),
                },
            },
        },
    }


def router_manifests(cfg: DeploymentConfig) -> list[Manifest]:
    """The router's objects, in apply order (RBAC and the edge's ConfigMap before the pod
    that uses them)."""
    return [
        service_account(cfg),
        role(cfg),
        role_binding(cfg),
        edge_config_map(cfg, router_meta(cfg)),
        router_deployment(cfg),
    ]
