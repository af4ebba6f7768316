"""The production parts of `python -m serve render k8s`: GPU placement (node affinity on
GPU Feature Discovery's labels), the NetworkPolicy, TLS from a Secret and the
PodDisruptionBudget, for the H100, the 4-replica and the 2-node configs, each object
validated strictly against the Kubernetes schemas (bad input: test_k8s_refusals.py).

Whether a rule admits a node is worked out here by the scheduler's and the network
plugin's documented semantics (matchLabels, In, Gt; the peers of a NetworkPolicy rule)
against node labels as GFD printed them in public listings (serve/plan/gpus.yaml).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from serve.command.argv import check_vllm_argv
from serve.config.deployment import load_config
from serve.launch.probe import build_parser as probe_parser
from serve.plan.inputs import load_gpus
from serve.render.k8s import render_k8s
from serve.render.k8s_placement import pod_specs
from tests.conftest import REPO
from tests.unit.serve.render.render_checks import K8S_VERSIONS, validate_strict

CONFIGS = REPO / "configs" / "deployments"
H100 = CONFIGS / "medgemma-4b-it-h100.yaml"
REPLICAS = CONFIGS / "medgemma-4b-it-4replicas.yaml"
TWO_NODES = CONFIGS / "medgemma-27b-it-2nodes.yaml"
PROD_CONFIGS = [H100, REPLICAS, TWO_NODES]
TLS = ["kubernetes.tls_secret=medgemma-tls"]

# Node labels as GFD wrote them (serve/plan/gpus.yaml names the listings; the A100 40 GB
# one is GFD's own README; H200 memory is the catalogue's nvidia-smi figure).
GFD_NODES = {  # name: (nvidia.com/gpu.product, nvidia.com/gpu.memory)
    "h100-sxm": ("NVIDIA-H100-80GB-HBM3", "81559"),
    "h100-pcie": ("NVIDIA-H100-PCIe", "81559"),
    "h100-nvl": ("NVIDIA-H100-NVL", "95830"),
    "h200": ("NVIDIA-H200", "143771"),
    "a100-80": ("NVIDIA-A100-SXM4-80GB", "81920"),
    "a100-40": ("A100-SXM4-40GB", "39538"),
    "l40s": ("NVIDIA-L40S", "46068"),
    "l4": ("NVIDIA-L4", "23034"),
    "a10g": ("NVIDIA-A10G", "23028"),
    "a100-mig-1g": ("NVIDIA-A100-80GB-PCIe-MIG-1g.10gb", "9728"),
}
NODES = {
    name: {"nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": memory}
    for name, (product, memory) in GFD_NODES.items()
} | {"no-gfd": {"kubernetes.io/hostname": "cpu-node"}}


def manifests(path: Path, *overrides: str) -> list[dict[str, Any]]:
    return render_k8s(load_config(path, list(overrides)))


def one(ms: list[dict[str, Any]], kind: str, role: str | None = None) -> dict[str, Any]:
    """The manifest of `kind` (vLLM's, or the router's with role="router")."""
    found = [
        m
        for m in ms
        if m["kind"] == kind and m["metadata"]["labels"].get("medgemma-serve/role") == role
    ]
    assert len(found) == 1, [(m["kind"], m["metadata"]["name"]) for m in ms]
    return found[0]


def workload(ms: list[dict[str, Any]]) -> dict[str, Any]:
    (w,) = [m for m in ms if m["kind"] in ("Deployment", "LeaderWorkerSet") and not is_router(m)]
    return w


def is_router(m: dict[str, Any]) -> bool:
    return m["metadata"]["labels"].get("medgemma-serve/role") == "router"


def pod_labels(ms: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The labels of every vLLM pod template (a LeaderWorkerSet's leader and worker)."""
    w = workload(ms)
    if w["kind"] == "LeaderWorkerSet":
        lwt = w["spec"]["leaderWorkerTemplate"]
        return [lwt[t]["metadata"]["labels"] for t in ("leaderTemplate", "workerTemplate")]
    return [w["spec"]["template"]["metadata"]["labels"]]


def router_pod_labels(ms: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = one(ms, "Deployment", "router")["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


# --- selector semantics (the scheduler's and the NetworkPolicy's) -------------------------


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector: every matchLabels pair present (an empty selector selects all)."""
    return selector.get("matchLabels", {}).items() <= labels.items()


def expression_holds(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    value = labels.get(expr["key"])
    if value is None:
        return False
    if expr["operator"] == "In":
        return value in expr["values"]
    if expr["operator"] == "Gt":  # the label parsed as an integer, strictly greater
        return int(value) > int(expr["values"][0])
    raise AssertionError(f"operator not modelled here: {expr}")


def term_holds(term: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(expression_holds(e, labels) for e in term["matchExpressions"])


def schedulable(spec: dict[str, Any], node: dict[str, str]) -> bool:
    """The pod's nodeSelector and required node affinity both admit the node."""
    if not spec.get("nodeSelector", {}).items() <= node.items():
        return False
    required = spec.get("affinity", {}).get("nodeAffinity", {})
    required = required.get("requiredDuringSchedulingIgnoredDuringExecution")
    return required is None or any(term_holds(t, node) for t in required["nodeSelectorTerms"])


def preferred(spec: dict[str, Any], node: dict[str, str]) -> bool:
    prefs = spec.get("affinity", {}).get("nodeAffinity", {})
    prefs = prefs.get("preferredDuringSchedulingIgnoredDuringExecution", [])
    return any(term_holds(p["preference"], node) for p in prefs)


def admitted(path: Path, *overrides: str) -> set[str]:
    specs = pod_specs(workload(manifests(path, *overrides)))
    return {name for name, node in NODES.items() if all(schedulable(s, node) for s in specs)}


# --- every object validated -----------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", PROD_CONFIGS, ids=lambda p: p.stem)
def test_the_new_objects_validate_strictly(path: Path, version: str) -> None:
    overrides = [] if path == REPLICAS else TLS  # the router reaches replicas over http
    ms = manifests(path, *overrides)
    kinds = [m["kind"] for m in ms]
    assert {"NetworkPolicy", "PodDisruptionBudget"} <= set(kinds), kinds
    for m in ms:
        try:
            validate_strict(m, version)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name} {m['kind']} invalid for {version}: {where}: {exc.message}")
    assert all("affinity" in s for s in pod_specs(workload(ms))), "placed by gpu_type"


def test_the_validator_refuses_a_broken_network_policy() -> None:
    """A control: the schema knows NetworkPolicy's fields, so passing means something."""
    policy = one(manifests(H100), "NetworkPolicy")
    policy["spec"]["ingress"][0]["from"][0]["podSelecter"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, K8S_VERSIONS[-1], strict=True)


# --- placement ------------------------------------------------------------------------------


def test_h100_pods_go_where_the_planned_memory_is() -> None:
    assert admitted(H100) == {"h100-sxm", "h100-pcie", "h100-nvl", "h200", "a100-80"}
    (spec,) = pod_specs(workload(manifests(H100)))
    prefer = {name for name, node in NODES.items() if preferred(spec, node)}
    assert prefer == {"h100-sxm", "h100-pcie"}, spec["affinity"]
    assert load_gpus()["h100-80gb"].gfd_products == ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe")


def test_the_memory_rule_keeps_each_gpu_class_and_drops_the_next_smaller() -> None:
    """For every catalogue GPU: a node with exactly its memory is admitted, one with the
    GFD-reported 39538 MiB of a 40 GB A100 passes a 40 GB config, a MIG slice never."""
    for name, gpu in load_gpus().items():
        got = admitted(H100, f"gpu_type={name}")
        same = {"nvidia.com/gpu.memory": str(gpu.memory_mib)}
        spec = pod_specs(workload(manifests(H100, f"gpu_type={name}")))[0]
        assert schedulable(spec, same), (name, spec["affinity"])
        assert "a100-mig-1g" not in got and "no-gfd" not in got, (name, got)
    assert "a100-40" in admitted(H100, "gpu_type=a100-40gb")
    assert admitted(H100, "gpu_type=l40s-48gb") >= {"l40s", "h100-sxm"}
    assert "a100-40" not in admitted(H100, "gpu_type=l40s-48gb")


def test_two_nodes_place_leader_and_worker_alike_with_the_node_selector() -> None:
    ms = manifests(TWO_NODES)
    leader, worker = pod_specs(workload(ms))
    assert leader["affinity"] == worker["affinity"], (leader, worker)
    # The config's own nodeSelector (NVIDIA-L4) and the L4 memory rule both apply.
    assert admitted(TWO_NODES) == {"l4"}
    assert admitted(TWO_NODES, "kubernetes.node_selector={}") >= {"l4", "a10g", "l40s"}


def test_gpu_placement_product_and_none_and_the_override() -> None:
    assert admitted(H100, "kubernetes.gpu_placement=product") == {"h100-sxm", "h100-pcie"}
    nvl = ["kubernetes.gpu_placement=product", 'kubernetes.gpu_products=["NVIDIA-H100-NVL"]']
    assert admitted(H100, *nvl) == {"h100-nvl"}
    assert admitted(H100, "kubernetes.gpu_placement=none") == set(NODES)
    spec = pod_specs(workload(manifests(H100, "kubernetes.gpu_placement=none")))[0]
    assert "affinity" not in spec, spec


# --- NetworkPolicy --------------------------------------------------------------------------


def peer_admits(
    peer: dict[str, Any], pod: dict[str, str], ns: dict[str, str], policy_ns: str
) -> bool:
    """A NetworkPolicy peer: a podSelector alone selects pods of the policy's own
    namespace; with a namespaceSelector, pods of the namespaces it selects."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], ns):
            return False
    elif ns.get("kubernetes.io/metadata.name") != policy_ns:
        return False
    return "podSelector" not in peer or matches(peer["podSelector"], pod)


def allowed_in(policy: dict[str, Any], pod: dict[str, str], ns: dict[str, str]) -> set[int]:
    """The ports (0 = every port) a pod in namespace `ns` may reach the selected pods on."""
    out: set[int] = set()
    policy_ns = policy["metadata"]["namespace"]
    for rule in policy["spec"]["ingress"]:
        if any(peer_admits(p, pod, ns, policy_ns) for p in rule["from"]):
            out |= {p["port"] for p in rule.get("ports", [])} or {0}
    return out


def own_ns(ms: list[dict[str, Any]]) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": one(ms, "Namespace")["metadata"]["name"]}


OTHER_NS = {"kubernetes.io/metadata.name": "web"}
MONITORING_NS = {"kubernetes.io/metadata.name": "monitoring"}


def test_h100_policy_clients_monitoring_dns_and_the_hub() -> None:
    ms = manifests(H100)
    policy = one(ms, "NetworkPolicy")
    (vllm,) = pod_labels(ms)
    assert matches(policy["spec"]["podSelector"], vllm)
    assert allowed_in(policy, {"app": "viewer"}, own_ns(ms)) == {8000}
    assert allowed_in(policy, {"app": "viewer"}, OTHER_NS) == set()
    assert allowed_in(policy, {"app": "prometheus"}, MONITORING_NS) == {8000}
    egress = policy["spec"]["egress"]
    dns, hub = egress
    assert {p["port"] for p in dns["ports"]} == {53}
    assert hub["ports"] == [{"protocol": "TCP", "port": 443}], hub
    assert "10.0.0.0/8" in hub["to"][0]["ipBlock"]["except"], "no private addresses"
    rules = policy["metadata"]["annotations"]["medgemma-serve/rules"]
    numbers = re.findall(r"(?:^|; )(\d+)\) ", rules)  # one reason per rule, in order
    assert numbers == [str(i) for i in range(1, len(policy["spec"]["ingress"]) + 3)], rules


def test_replica_pods_accept_only_the_router() -> None:
    ms = manifests(REPLICAS)
    policy = one(ms, "NetworkPolicy")
    (vllm,) = pod_labels(ms)
    router = router_pod_labels(ms)
    assert matches(policy["spec"]["podSelector"], vllm)
    assert not matches(policy["spec"]["podSelector"], router), "the router is not policed"
    assert allowed_in(policy, router, own_ns(ms)) == {8000}
    assert allowed_in(policy, {"app": "viewer"}, own_ns(ms)) == set()
    assert allowed_in(policy, vllm, own_ns(ms)) == set(), "replicas do not call each other"


def test_two_node_pods_reach_each_other_on_every_port() -> None:
    ms = manifests(TWO_NODES)
    policy = one(ms, "NetworkPolicy")
    leader, worker = pod_labels(ms)
    for pod in (leader, worker):
        assert matches(policy["spec"]["podSelector"], pod)
        assert allowed_in(policy, pod, own_ns(ms)) == {0, 8000}  # Ray/NCCL, and the API
    ray_out = [r for r in policy["spec"]["egress"] if "ports" not in r]
    assert len(ray_out) == 1 and all(matches(p["podSelector"], worker) for p in ray_out[0]["to"])


def test_a_local_model_opens_nothing_outward() -> None:
    ms = manifests(H100, "model=/models/medgemma-4b-it")
    assert one(ms, "NetworkPolicy")["spec"]["egress"] == []


def test_named_clients_and_no_policy() -> None:
    sets = [
        'kubernetes.network_policy.client_namespaces={"kubernetes.io/metadata.name": "web"}',
        'kubernetes.network_policy.client_pods={"app": "viewer"}',
        'kubernetes.network_policy.client_cidrs=["10.20.0.0/16"]',
    ]
    ms = manifests(H100, *sets)
    policy = one(ms, "NetworkPolicy")
    assert allowed_in(policy, {"app": "viewer"}, OTHER_NS) == {8000}
    assert allowed_in(policy, {"app": "other"}, OTHER_NS) == set()
    assert allowed_in(policy, {"app": "viewer"}, own_ns(ms)) == set()
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "10.20.0.0/16"}} in peers, peers
    off = manifests(H100, "kubernetes.network_policy.enabled=false")
    assert "NetworkPolicy" not in [m["kind"] for m in off]


# --- TLS from a Secret ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [H100, TWO_NODES], ids=lambda p: p.stem)
def test_tls_comes_from_the_secret_mounted_read_only(path: Path) -> None:
    ms = manifests(path, *TLS)
    w = workload(ms)
    serving = pod_specs(w)[0]
    (c,) = serving["containers"]
    (volume,) = [v for v in serving["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "medgemma-tls", volume
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    args = " ".join(c["args"])
    for flag, key in (("--ssl-certfile", "tls.crt"), ("--ssl-keyfile", "tls.key")):
        assert f"{flag} {mount['mountPath']}/{key}" in args, args
    if w["kind"] == "Deployment":
        assert check_vllm_argv(c["args"]) is None
    assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    probe = probe_parser().parse_args(c["readinessProbe"]["exec"]["command"][4:])
    assert probe.base_url.startswith("https://") and probe.insecure, probe
    monitor = one(ms, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert monitor["scheme"] == "https", monitor


def test_without_a_secret_there_is_no_tls_in_the_pod() -> None:
    (spec,) = pod_specs(workload(manifests(H100)))
    assert not any("secret" in v for v in spec["volumes"])
    assert "--ssl-certfile" not in spec["containers"][0]["args"]


# --- PodDisruptionBudget --------------------------------------------------------------------


@pytest.mark.parametrize("path", PROD_CONFIGS, ids=lambda p: p.stem)
def test_the_budget_lets_a_drain_take_one_pod(path: Path) -> None:
    """With maxUnavailable 1 a drain may always evict one healthy vLLM pod, even the only
    replica on a one-GPU cluster: disruptionsAllowed = healthy - (expected - 1) >= 1."""
    ms = manifests(path, "kubernetes.replicas=1") if path != REPLICAS else manifests(path)
    pdb = one(ms, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb, pdb
    expected = 1 if path != REPLICAS else 4
    assert expected - (expected - pdb["maxUnavailable"]) >= 1
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow", pdb
    assert all(matches(pdb["selector"], pod) for pod in pod_labels(ms))
    if path == REPLICAS:
        assert not matches(pdb["selector"], router_pod_labels(ms))


def test_a_one_gpu_cluster_can_roll_out_with_max_surge_0() -> None:
    """The default rollout starts the new pod first (it needs a second GPU); max_surge 0
    stops the old one first, so a rollout can finish on a one-GPU cluster."""
    default = workload(manifests(H100))["spec"]["strategy"]["rollingUpdate"]
    assert default == {"maxSurge": 1, "maxUnavailable": 0}, default
    one_gpu = workload(manifests(H100, "kubernetes.max_surge=0"))
    assert one_gpu["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    for version in K8S_VERSIONS:
        validate_strict(one_gpu, version)
