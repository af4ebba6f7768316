"""The `kubernetes.network_policy:` section: who may reach the vLLM pods, and where they
may connect, as `python -m serve render k8s` writes it into a NetworkPolicy.

Names and selectors only; whether the namespaces and pods exist is the cluster's business.
Label keys and values, namespace names (serve.config.k8s_names) and CIDRs are checked at
load.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve.config.k8s_names import dns_label, labels


class NetworkPolicySettings(BaseModel):
    """The NetworkPolicy around the vLLM pods: ingress from the API's clients (or the
    router) and from the monitoring namespace, egress to DNS and the Hugging Face Hub only."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        description="Render the NetworkPolicy. It takes effect only with a network plugin "
        "that enforces NetworkPolicies (Calico, Cilium, ...); with others it is ignored.",
    )
    client_namespaces: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of the namespaces whose pods call the API, e.g. "
        "{kubernetes.io/metadata.name: viewer}. Without `replicas:` only; with it the vLLM "
        "pods accept only vllm-router. Unset with client_pods and client_cidrs unset: the "
        "pods of the deployment's own namespace.",
    )
    client_pods: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of the pods that call the API, e.g. {app: viewer}; in the "
        "client_namespaces if set, else in the deployment's namespace.",
    )
    client_cidrs: list[str] = Field(
        default_factory=list,
        description="Address blocks (CIDR) API calls may come from outside the cluster, e.g. "
        "['10.20.0.0/16']: needed with service_type NodePort or LoadBalancer, whose clients "
        "are no pods.",
    )
    monitoring_namespace: str | None = Field(
        "monitoring",
        description="Namespace of the Prometheus that scrapes /metrics (kube-prometheus-stack "
        "installs into `monitoring` by convention); null: no scraping from another namespace.",
    )
    dns_namespace: str = Field(
        "kube-system",
        description="Namespace of the cluster DNS (CoreDNS/kube-dns) the pods may query on "
        "port 53.",
    )
    hub_cidrs: list[str] | None = Field(
        None,
        description="Address blocks the pods may reach on TCP 443 to download from the "
        "Hugging Face Hub, e.g. a proxy's ['10.0.0.8/32']. Unset: any public IPv4 address "
        "(the Hub's CDN addresses change; a NetworkPolicy cannot name hosts). Not rendered "
        "when the model and every adapter are local paths.",
    )

    @field_validator("client_namespaces", "client_pods")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return labels(v)

    @field_validator("client_cidrs", "hub_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str] | None) -> list[str] | None:
        for block in v or []:
            try:
                ipaddress.ip_network(block)
            except ValueError:
                raise ValueError(
                    f"{block!r} is not an address block (CIDR), e.g. 10.0.0.0/8"
                ) from None
        return v

    @field_validator("monitoring_namespace", "dns_namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        return dns_label(v)
