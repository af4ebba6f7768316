"""The NetworkPolicy around the vLLM pods (pure), from `kubernetes.network_policy`.

It selects this deployment's vLLM pods (servers, or a LeaderWorkerSet's leaders and
workers; not vllm-router's) and, once it exists, they accept and open only what a rule
below allows. Each rule says why in a comment here and in the object's annotation
`medgemma-serve/rules` (what `kubectl describe networkpolicy` shows). A NetworkPolicy
works on addresses and ports, not paths or host names: the monitoring rule opens the API
port (the API itself still wants its key), and the Hub is reached by address block.
Traffic from the pod's own node (the kubelet's /health probes) and over loopback (the
readiness probe's request to 127.0.0.1) is never blocked by a NetworkPolicy.
"""

from __future__ import annotations

from typing import Any

from serve.command.argv import to_server_env
from serve.config.deployment import DeploymentConfig
from serve.render.k8s_pod import labels, meta
from serve.render.k8s_router import router_labels

NAMESPACE_NAME = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace (1.22+)
# Addresses that are not the public internet: RFC 1918 private, RFC 6598 shared (some pod
# networks), link-local (the cloud metadata service at 169.254.169.254).
NOT_PUBLIC = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"]
Rule = dict[str, Any]


def namespace_peer(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME: name}}}


def tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def needs_hub(cfg: DeploymentConfig) -> bool:
    """The pods download from the Hugging Face Hub unless their environment is offline
    (a local model folder sets HF_HUB_OFFLINE=1, serve.command.argv.to_server_env)."""
    return to_server_env(cfg, {}).get("HF_HUB_OFFLINE") != "1"


def client_peers(cfg: DeploymentConfig) -> tuple[list[dict[str, Any]], str]:
    """Who may call the API, and why (serve.render.k8s_checks refused what cannot work)."""
    np = cfg.kubernetes.network_policy
    if cfg.replicas is not None:
        return (
            [{"podSelector": {"matchLabels": router_labels(cfg)}}],
            "the API port from the router pod only (its edge checks the callers' keys; the "
            "replicas want the internal key only the edge sends)",
        )
    peers: list[dict[str, Any]] = []
    if np.client_namespaces or np.client_pods:
        peer: dict[str, Any] = {}
        if np.client_namespaces:
            peer["namespaceSelector"] = {"matchLabels": dict(np.client_namespaces)}
        if np.client_pods:
            peer["podSelector"] = {"matchLabels": dict(np.client_pods)}
        peers.append(peer)
    peers += [{"ipBlock": {"cidr": block}} for block in np.client_cidrs]
    if peers:
        return peers, "the API port from the clients kubernetes.network_policy names"
    return (
        [{"podSelector": {}}],
        "the API port from pods of this namespace (no clients named in kubernetes.network_policy)",
    )


def public_block(cidrs: list[str] | None) -> list[dict[str, Any]]:
    """The config's address blocks, else every public IPv4 address."""
    if cidrs is not None:
        return [{"ipBlock": {"cidr": block}} for block in cidrs]
    return [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(NOT_PUBLIC)}}]


def ingress_rules(cfg: DeploymentConfig) -> tuple[list[Rule], list[str]]:
    np = cfg.kubernetes.network_policy
    peers, why = client_peers(cfg)
    # 1. The API (OpenAI routes, /health) from its callers.
    rules: list[Rule] = [{"from": peers, "ports": tcp(cfg.port)}]
    reasons = [why]
    if np.monitoring_namespace is not None:
        # 2. Prometheus scrapes /metrics, which vLLM serves on the API port.
        rules.append({"from": [namespace_peer(np.monitoring_namespace)], "ports": tcp(cfg.port)})
        reasons.append(
            f"the API port from namespace {np.monitoring_namespace}, for Prometheus's "
            "/metrics scrape (a NetworkPolicy cannot limit a path)"
        )
    if cfg.nodes > 1:
        # 3. Ray (GCS, object manager, workers) and NCCL between the group's pods, on
        #    ports Ray and NCCL pick at run time.
        rules.append({"from": [{"podSelector": {"matchLabels": labels(cfg)}}]})
        reasons.append("every port from this deployment's pods: Ray and NCCL across nodes")
    return rules, reasons


def egress_rules(cfg: DeploymentConfig) -> tuple[list[Rule], list[str]]:
    np = cfg.kubernetes.network_policy
    rules: list[Rule] = []
    reasons: list[str] = []
    hub = needs_hub(cfg)
    if hub or cfg.nodes > 1 or cfg.allowed_media_domains:
        # 1. DNS: the Hub's and media hosts' names, the LeaderWorkerSet leader's address.
        rules.append(
            {
                "to": [namespace_peer(np.dns_namespace)],
                "ports": [{"protocol": p, "port": 53} for p in ("UDP", "TCP")],
            }
        )
        reasons.append(f"out: DNS (53) to namespace {np.dns_namespace}")
    if hub:
        # 2. The Hugging Face Hub over HTTPS: weights download at first start, and the
        #    tokenizer and config are read at every start unless the cache is offline.
        rules.append({"to": public_block(np.hub_cidrs), "ports": tcp(443)})
        where = "the addresses in hub_cidrs" if np.hub_cidrs is not None else "public addresses"
        reasons.append(f"out: HTTPS (443) to {where}, for the Hugging Face Hub download")
    if cfg.allowed_media_domains:
        # 3. Image URLs from allowed_media_domains: their addresses are not known here.
        rules.append({"ports": tcp(80, 443)})
        reasons.append("out: HTTP(S) anywhere, for image URLs on allowed_media_domains")
    if cfg.nodes > 1:
        # 4. Ray and NCCL to the group's other pods.
        rules.append({"to": [{"podSelector": {"matchLabels": labels(cfg)}}]})
        reasons.append("out: every port to this deployment's pods: Ray and NCCL")
    if not rules:
        reasons.append("out: nothing (a local model: no download, no peers)")
    return rules, reasons


def network_policy(cfg: DeploymentConfig) -> dict[str, Any]:
    """Ingress from the clients (or the router) and the monitoring namespace; egress to
    DNS and the Hub only (none for a local model on one node)."""
    ingress, why_in = ingress_rules(cfg)
    egress, why_out = egress_rules(cfg)
    metadata = meta(cfg)
    metadata["annotations"] = {
        "medgemma-serve/rules": "; ".join(f"{i}) {r}" for i, r in enumerate(why_in + why_out, 1))
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": labels(cfg)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }
