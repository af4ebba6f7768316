"""Config sections for running one deployment beyond one machine: Kubernetes and Ray.

`DeploymentConfig` holds them as `kubernetes:` and `ray:`; `python -m serve render k8s`
and `python -m serve render ray` read them. Every field has a default, so a config
renders without either section; secrets are named here (Kubernetes Secret names),
never written.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve.config.k8s_names import dns_label, label_value, labels
from serve.config.network import NetworkPolicySettings

# How the pods are placed by GPU (NVIDIA GPU Feature Discovery's node labels):
# memory - on nodes whose GPUs have at least gpu_type's memory, preferring its products;
# product - only on nodes whose GPU product is one of gpu_type's (or gpu_products);
# none - no GPU rule (node_selector alone).
GpuPlacement = Literal["memory", "product", "none"]


class KubernetesSettings(BaseModel):
    """How `python -m serve render k8s` lays the deployment out on a cluster."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None, description="Name of the rendered objects; defaults to served_model_name."
    )
    namespace: str = Field("medgemma", description="Namespace the objects are created in.")
    image: str = Field(
        "medgemma-serve:0.1.0",
        description="Container image built from serve/Dockerfile (vllm/vllm-openai:v0.32.0 "
        "plus this repo's serve/ package, which the server imports); push it to your registry "
        "and name it here.",
    )
    replicas: int = Field(1, ge=1, description="Replicas at start; the autoscaler's minimum.")
    max_replicas: int = Field(4, ge=1, description="The autoscaler's maximum replicas.")
    target_waiting_requests: float = Field(
        4,
        gt=0,
        description="Autoscaling target: average requests waiting in vLLM's queue per replica "
        "(vllm:num_requests_waiting through the custom-metrics API).",
    )
    waiting_metric: str = Field(
        "vllm_num_requests_waiting",
        description="Name under which prometheus-adapter serves vllm:num_requests_waiting.",
    )
    model_cache_gib: int = Field(
        120, ge=1, description="Size of the PersistentVolumeClaim the Hub cache lives on."
    )
    storage_class: str | None = Field(
        None, description="StorageClass of the model cache claim (cluster default if unset)."
    )
    hf_token_secret: str = Field(
        "hf-token", description="Secret whose key `token` holds HF_TOKEN (gated MedGemma repos)."
    )
    api_key_secret: str | None = Field(
        "medgemma-api-key",
        description="Secret whose key `api-key` holds the API key every /v1 route requires; "
        "null serves without a key.",
    )
    shm_gib: int = Field(
        16, ge=1, description="Size of /dev/shm (in-memory emptyDir) for NCCL and workers."
    )
    cpu: str = Field("8", description="CPU request and limit of each pod, e.g. '8' or '7500m'.")
    memory_gib: int = Field(64, ge=1, description="Memory request and limit of each pod (GiB).")
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels the pods require, e.g. {nvidia.com/gpu.product: NVIDIA-L4}; "
        "added to the gpu_placement rule (a node must satisfy both).",
    )
    gpu_placement: GpuPlacement = Field(
        "memory",
        description="Node affinity from `gpu_type` on NVIDIA GPU Feature Discovery's labels. "
        "`memory` (default): require nvidia.com/gpu.memory above 95% of gpu_type's memory "
        "(serve/plan/gpus.yaml; the sizes were planned for it) and prefer its "
        "nvidia.com/gpu.product strings; `product`: require one of those products; "
        "`none`: no GPU rule (node_selector only). Needs gpu_type for cuda configs.",
    )
    gpu_products: list[str] | None = Field(
        None,
        description="nvidia.com/gpu.product values to prefer (gpu_placement memory) or "
        "require (product) instead of gpu_type's in serve/plan/gpus.yaml, e.g. "
        "[NVIDIA-H100-NVL] for a SKU the catalogue does not list.",
    )
    tls_secret: str | None = Field(
        None,
        description="Secret of type kubernetes.io/tls (`kubectl create secret tls NAME "
        "--cert=... --key=...`) mounted read-only into the vLLM pods: the server gets "
        "--ssl-certfile/--ssl-keyfile on the mount and serves HTTPS. With `replicas:` it is "
        "mounted into the edge (nginx in the router pod) instead, which serves HTTPS; the "
        "replica pods behind it speak plain http (vllm-router's service discovery has no "
        "https), reachable from the router pods only (the NetworkPolicy). The rendering machine "
        "needs neither file; `ssl_certfile`/`ssl_keyfile` are for local runs and render "
        "k8s refuses them without this.",
    )
    keys_secret: str | None = Field(
        None,
        description="With `replicas:` and `auth.keys_file`: the Secret whose key `keys` holds "
        "the keys file (`kubectl create secret generic NAME --from-file=keys=FILE`), mounted "
        "read-only (0400) into the edge's key check in the router pod. The rendering machine "
        "needs no file; render k8s refuses auth.keys_file without this.",
    )
    internal_key_secret: str = Field(
        "medgemma-internal-key",
        description="With `replicas:`: the Secret whose key `internal-key` holds the replicas' "
        "internal key (a URL-safe token of 16+ characters, e.g. from `python3 -c 'import "
        "secrets; print(secrets.token_urlsafe(32))'`). The edge (nginx in the router pod) "
        "sends it to the replicas in place of every caller's key; the replicas accept no other.",
    )
    edge_image: str = Field(
        "docker.io/library/nginx:1.27-alpine",
        description="With `replicas:`: the image of the edge, nginx in the router pod (it needs "
        "nginx, sh and sed). The key check beside it runs in `kubernetes.image`.",
    )
    network_policy: NetworkPolicySettings = Field(
        default_factory=NetworkPolicySettings,
        description="The NetworkPolicy of the vLLM pods: who may connect, where they may "
        "connect to.",
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="Type of the Service in front of the API."
    )
    max_surge: int = Field(
        1,
        ge=0,
        le=1,
        description="Deployment rollout: 1 (default) starts each new vLLM pod before its old "
        "one stops (no gap, but it needs a spare GPU); 0 stops the old pod first (the API "
        "is down while the new one loads) - for a cluster with no GPU to spare, where a "
        "surge pod would wait Pending and the rollout never finish.",
    )
    max_unavailable: int = Field(
        1,
        ge=1,
        description="PodDisruptionBudget: vLLM pods a voluntary disruption (node drain, "
        "upgrade) may take at once. At least 1: with 0, or with one replica and a "
        "minAvailable, `kubectl drain` would wait forever on a one-GPU cluster.",
    )

    @field_validator(
        "name",
        "namespace",
        "hf_token_secret",
        "api_key_secret",
        "tls_secret",
        "keys_secret",
        "internal_key_secret",
    )
    @classmethod
    def _k8s_names(cls, v: str | None) -> str | None:
        return dns_label(v)

    @field_validator("node_selector")
    @classmethod
    def _node_labels(cls, v: dict[str, str]) -> dict[str, str]:
        return labels(v)

    @field_validator("gpu_products")
    @classmethod
    def _products(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("an empty list: name at least one product, or leave it unset")
        for product in v or []:
            if not product:
                raise ValueError("an empty product string")
            label_value(product)
        return v


class RaySettings(BaseModel):
    """How `python -m serve render ray` starts the Ray cluster under vLLM."""

    model_config = ConfigDict(extra="forbid")

    port: int = Field(6379, ge=1, le=65535, description="Port of the Ray head (GCS).")
    head_address: str | None = Field(
        None,
        description="Address workers join, e.g. 10.0.0.5; unset renders ${RAY_HEAD_IP}.",
    )
    num_cpus_per_node: int | None = Field(
        None, ge=1, description="CPUs each node offers Ray (CPU deployments; all if unset)."
    )
