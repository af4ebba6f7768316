"""Config sections for running one deployment beyond one machine: Kubernetes and Ray.

`DeploymentConfig` holds them as `kubernetes:` and `ray:`; `python -m serve render k8s`
and `python -m serve render ray` read them. Every field has a default, so a config
renders without either section; secrets are named here (Kubernetes Secret names),
never written.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _dns_label(v: str | None) -> str | None:
    if v is not None and (len(v) > 63 or not DNS_LABEL.match(v)):
        raise ValueError(
            f"{v!r} is not a Kubernetes name (lower-case letters, digits and '-', "
            "at most 63 characters, starting and ending with a letter or digit)"
        )
    return v


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
        description="Node labels the pods require, e.g. {nvidia.com/gpu.product: NVIDIA-L4}.",
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="Type of the Service in front of the API."
    )
    max_unavailable: int = Field(
        1, ge=0, description="PodDisruptionBudget: replicas a voluntary disruption may take."
    )

    @field_validator("name", "namespace", "hf_token_secret", "api_key_secret")
    @classmethod
    def _k8s_names(cls, v: str | None) -> str | None:
        return _dns_label(v)


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
