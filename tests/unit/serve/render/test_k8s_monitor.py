"""The rendered monitoring for Kubernetes: PodMonitors, PrometheusRule and the dashboard
ConfigMap, validated against the Prometheus Operator's CRD models, their rules checked by
promtool, and their relabelings run by a real Prometheus.

The CRD schemas come from cloudcoil-models-prometheus-operator: pydantic models generated
from the Operator's CRDs (openAPIV3Schema: field names, types, enums, patterns). Validated
with `strict=True, extra="forbid"`, an unknown field or a wrong type is an error, as
`kubectl apply --validate=strict` makes it.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pydantic
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring

from serve.config.deployment import DeploymentConfig, load_config
from serve.monitor.prometheus import Prometheus
from serve.process import free_port
from serve.render.alerts import AlertThresholds, alert_rules, render_alerts
from serve.render.dashboard import panel_queries, render_dashboard
from serve.render.k8s import render_k8s
from serve.render.k8s_monitor import MONITORING_API, prometheus_rule_groups
from serve.render.ray import RenderError
from tests.conftest import REPO
from tests.unit.serve.monitor.test_monitor import metrics_page, poll

REPO = REPO
CONFIGS = REPO / "configs" / "deployments"
# The configs a Kubernetes pod can serve (no random-weight stand-in).
RENDERABLE = [p for p in sorted(CONFIGS.glob("*.yaml")) if load_config(p).stand_in is None]
REPLICAS = CONFIGS / "medgemma-4b-it-4replicas.yaml"
ONE_SERVER = CONFIGS / "medgemma-4b-it.yaml"
CRD_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "PodMonitor": monitoring.PodMonitor,
    "ServiceMonitor": monitoring.ServiceMonitor,
    "PrometheusRule": monitoring.PrometheusRule,
}
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus not installed (make install, as root)",
)


def validate_crd(manifest: dict[str, Any]) -> None:
    """Raise pydantic.ValidationError unless the manifest fits its CRD's schema exactly."""
    model = CRD_MODELS[manifest["kind"]]
    parsed = model.model_validate(manifest, strict=True, extra="forbid")
    # Nothing defaulted in or converted: what the model read is what was written.
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == manifest


def monitoring_of(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in manifests if m["apiVersion"] == MONITORING_API]


def config_map(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The dashboard's ConfigMap (a config with replicas has the edge's nginx.conf too)."""
    (cm,) = [
        m
        for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-dashboard")
    ]
    return cm


def pod_monitors(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The PodMonitors by the role they set."""
    out = {}
    for m in manifests:
        if m["kind"] == "PodMonitor":
            (endpoint,) = m["spec"]["podMetricsEndpoints"]
            role = next(r for r in endpoint["relabelings"] if r["targetLabel"] == "role")
            out[role["replacement"]] = m
    return out


@pytest.mark.parametrize("path", RENDERABLE, ids=lambda p: p.stem)
def test_every_monitoring_manifest_fits_its_schema(path: Path) -> None:
    cfg = load_config(path)
    manifests = render_k8s(cfg)
    crds = monitoring_of(manifests)
    kinds = sorted(m["kind"] for m in crds)
    expected = ["PodMonitor", "PodMonitor"] if cfg.replicas is not None else ["PodMonitor"]
    assert kinds == [*expected, "PrometheusRule"], kinds
    for m in crds:
        try:
            validate_crd(m)
        except pydantic.ValidationError as exc:
            pytest.fail(f"{path.name} {m['kind']} {m['metadata']['name']}: {exc}")
    kubernetes_validate.validate(
        config_map(manifests), kubernetes_validate.latest_version(), strict=True
    )
    namespaces = {m["metadata"].get("namespace") for m in manifests if m["kind"] != "Namespace"}
    assert namespaces == {cfg.kubernetes.namespace}, namespaces


def rename(key: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        d[new] = d.pop(key)

    return mutate


def endpoint(m: dict[str, Any]) -> dict[str, Any]:
    endpoint: dict[str, Any] = m["spec"]["podMetricsEndpoints"][0]
    return endpoint


def first_rule(m: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = m["spec"]["groups"][0]["rules"][0]
    return rule


BROKEN: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
    (
        "PodMonitor",
        "targetLable",
        lambda m: rename("targetLabel", "targetLable")(endpoint(m)["relabelings"][0]),
    ),
    (
        "PodMonitor",
        "podMetricsEndpoint",
        lambda m: rename("podMetricsEndpoints", "podMetricsEndpoint")(m["spec"]),
    ),
    ("PodMonitor", "honorLabels", lambda m: endpoint(m).update(honorLabels="true")),
    ("PodMonitor", "interval", lambda m: endpoint(m).update(interval="15 seconds")),
    ("PodMonitor", "action", lambda m: endpoint(m)["relabelings"][0].update(action="rename")),
    (
        "PodMonitor",
        "sourceLabels",
        lambda m: endpoint(m)["relabelings"][0].update(sourceLabels="__meta_kubernetes_pod_name"),
    ),
    ("PodMonitor", "labelz", lambda m: rename("labels", "labelz")(m["metadata"])),
    ("PrometheusRule", "fro", lambda m: rename("for", "fro")(first_rule(m))),
    ("PrometheusRule", "for", lambda m: first_rule(m).update({"for": "5 minutes"})),
    ("PrometheusRule", "labels", lambda m: first_rule(m).update(labels={"severity": 2})),
    ("PrometheusRule", "rule", lambda m: rename("rules", "rule")(m["spec"]["groups"][0])),
]


@pytest.mark.parametrize(
    ("kind", "field", "mutate"), BROKEN, ids=[f"{k}-{f}" for k, f, _ in BROKEN]
)
def test_a_broken_manifest_is_rejected(
    kind: str, field: str, mutate: Callable[[dict[str, Any]], None]
) -> None:
    """A control: a misspelt field, a wrong type or a value the CRD's enum or pattern
    refuses fails validation, naming the field."""
    manifest = next(m for m in render_k8s(load_config(REPLICAS)) if m["kind"] == kind)
    validate_crd(manifest)
    broken = copy.deepcopy(manifest)
    mutate(broken)
    with pytest.raises(pydantic.ValidationError) as err:
        validate_crd(broken)
    where = [[str(part) for part in e["loc"]] for e in err.value.errors()]
    assert any(field in loc for loc in where), str(err.value)


def promtool_check_rules(groups: list[dict[str, Any]], tmp_path: Path) -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_prometheus
@pytest.mark.parametrize("path", RENDERABLE, ids=lambda p: p.stem)
def test_the_prometheus_rule_is_render_alerts(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    manifests = render_k8s(cfg)
    groups = prometheus_rule_groups(manifests)
    assert groups == render_alerts(cfg)["groups"]
    (rule,) = [m for m in manifests if m["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] is groups
    out = promtool_check_rules(groups, tmp_path)
    assert f"SUCCESS: {len(alert_rules(cfg))} rules found" in out, out


def test_thresholds_reach_the_prometheus_rule() -> None:
    cfg = load_config(ONE_SERVER)
    t = AlertThresholds(ttft_slo_ms=2500, kv_cache_usage=0.8)
    groups = prometheus_rule_groups(render_k8s(cfg, t))
    assert groups == render_alerts(cfg, t)["groups"]
    assert groups != render_alerts(cfg)["groups"]


def test_prometheus_rule_groups_needs_exactly_one_rule() -> None:
    manifests = render_k8s(load_config(ONE_SERVER))
    without = [m for m in manifests if m["kind"] != "PrometheusRule"]
    with pytest.raises(RenderError, match="found 0"):
        prometheus_rule_groups(without)


@pytest.mark.parametrize("path", [ONE_SERVER, REPLICAS], ids=lambda p: p.stem)
def test_the_config_map_carries_the_dashboard(path: Path) -> None:
    cfg = load_config(path)
    cm = config_map(render_k8s(cfg))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", cm["metadata"]
    (key,) = cm["data"]
    assert key.endswith(".json") and cfg.model_name in key, key
    assert json.loads(cm["data"][key]) == render_dashboard(cfg)


def test_the_monitors_select_the_serving_pods() -> None:
    """Replica monitor: the vLLM pods' labels (LeaderWorkerSet: the leaders only); router
    monitor: the router pods' labels; each names a port its pods declare."""
    for path in (ONE_SERVER, REPLICAS, CONFIGS / "medgemma-27b-it-2nodes.yaml"):
        manifests = render_k8s(load_config(path))
        templates = {}
        for m in manifests:
            if m["kind"] == "Deployment":
                templates[m["metadata"]["name"]] = m["spec"]["template"]
            if m["kind"] == "LeaderWorkerSet":
                lwt = m["spec"]["leaderWorkerTemplate"]
                templates["leader"] = lwt["leaderTemplate"]
                templates["worker"] = lwt["workerTemplate"]
        for role, monitor in pod_monitors(manifests).items():
            selector = monitor["spec"]["selector"]["matchLabels"]
            picked = [
                t for t in templates.values() if selector.items() <= t["metadata"]["labels"].items()
            ]
            assert len(picked) == 1, (path.name, role, selector)
            containers = picked[0]["spec"]["containers"]  # the router pod's authz has no port
            ports = {p["name"] for c in containers for p in c.get("ports", [])}
            assert endpoint(monitor)["port"] in ports, (path.name, role, ports)
            assert picked[0]["metadata"]["annotations"]["prometheus.io/port"] in {
                str(p["containerPort"])
                for c in containers
                for p in c.get("ports", [])
                if p["name"] == endpoint(monitor)["port"]
            }


# Labels a query names that the scraped series carry themselves (vLLM's, the HTTP
# instrumentator's, a histogram's `le`): everything else must come from the relabelings.
OWN_LABELS = {"model_name", "finished_reason", "status", "le"}
LABEL_NAMES = re.compile(r"by \(([^)]*)\)|[{,]\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=|!=|=~|!~)")


def query_labels(cfg: DeploymentConfig) -> set[str]:
    """Every label a dashboard query or alert expression groups by or matches on."""
    exprs = [e for _, e in panel_queries(cfg)]
    exprs += [r.expr for r in alert_rules(cfg)] + [r.signal for r in alert_rules(cfg)]
    found: set[str] = set()
    for expr in exprs:
        for by, matcher in LABEL_NAMES.findall(expr):
            found |= {n.strip() for n in by.split(",") if n.strip()} | ({matcher} - {""})
    return found


def test_the_relabelings_set_every_label_the_queries_need() -> None:
    cfg = load_config(REPLICAS)
    needed = query_labels(cfg) - OWN_LABELS
    assert needed == {"replica"}, needed  # the check sees what the queries use
    for role, monitor in pod_monitors(render_k8s(cfg)).items():
        targets = {r["targetLabel"] for r in endpoint(monitor)["relabelings"]}
        assert needed | {"role"} <= targets, (role, targets)


def to_relabel_config(relabeling: dict[str, Any]) -> dict[str, Any]:
    """A PodMonitor relabeling as the Operator writes it into Prometheus' configuration."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    names |= {k: k for k in ("action", "replacement", "regex", "separator", "modulus")}
    return {names[k]: v for k, v in relabeling.items()}


def scrape_job(monitor: dict[str, Any], targets: dict[str, int]) -> dict[str, Any]:
    """The Operator's job for a PodMonitor, with the pods it would discover (pod name ->
    port on 127.0.0.1) as static targets carrying Kubernetes' discovery labels."""
    ep = endpoint(monitor)
    meta = monitor["metadata"]
    return {
        "job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/0",
        "metrics_path": ep["path"],
        "static_configs": [
            {
                "targets": [f"127.0.0.1:{port}"],
                "labels": {
                    "__meta_kubernetes_pod_name": pod,
                    "__meta_kubernetes_namespace": meta["namespace"],
                },
            }
            for pod, port in targets.items()
        ],
        "relabel_configs": [to_relabel_config(r) for r in ep["relabelings"]],
    }


REPLICA_PAGE = b"""# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="medgemma-4b-it",engine="0"} 2.0
"""
ROUTER_PAGE = b"""# TYPE vllm_router_requests_total counter
vllm_router_requests_total 7
"""


@needs_prometheus
def test_a_real_prometheus_runs_the_relabelings_and_the_rules(tmp_path: Path) -> None:
    """The PodMonitors' relabelings, as the Operator hands them to Prometheus, give pods
    the replica/role labels the queries group by; the PrometheusRule's groups load and
    evaluate without error."""
    cfg = load_config(REPLICAS)
    manifests = render_k8s(cfg)
    monitors = pod_monitors(manifests)
    pods = ["medgemma-4b-it-7d9c5b6f4-x2kqz", "medgemma-4b-it-7d9c5b6f4-mw8rt"]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": prometheus_rule_groups(manifests)}))
    with (
        metrics_page(page=REPLICA_PAGE) as first,
        metrics_page(page=REPLICA_PAGE) as second,
        metrics_page(page=ROUTER_PAGE) as router,
    ):
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                scrape_job(monitors["replica"], {pods[0]: first, pods[1]: second}),
                scrape_job(monitors["router"], {"medgemma-4b-it-router-5f6b8-q7tpl": router}),
            ],
        }
        with Prometheus(yaml.safe_dump(config), free_port(), root=tmp_path) as prom:
            up = poll(
                f"{prom.url}/api/v1/query?query=" + 'up{replica!=""} == 1',
                lambda b: b["data"]["result"] if len(b["data"]["result"]) == 3 else None,
            )
            seen = {(r["metric"]["replica"], r["metric"]["role"]) for r in up}
            assert seen == {(pods[0], "replica"), (pods[1], "replica"), ("router", "router")}
            assert not any(k.startswith("__meta") for r in up for k in r["metric"]), up
            waiting = poll(
                f"{prom.url}/api/v1/query?query="
                + 'sum by (replica) (vllm:num_requests_waiting{model_name="medgemma-4b-it"})',
                lambda b: b["data"]["result"] if len(b["data"]["result"]) == 2 else None,
            )
            assert {r["metric"]["replica"]: r["value"][1] for r in waiting} == {
                pods[0]: "2",
                pods[1]: "2",
            }, waiting
            expected = sorted(r.name for r in alert_rules(cfg))
            evaluated = poll(
                f"{prom.url}/api/v1/rules",
                lambda b: (
                    sorted(
                        r["name"]
                        for g in b["data"]["groups"]
                        for r in g["rules"]
                        if r["health"] == "ok" and not r["lastEvaluation"].startswith("0001")
                    )
                    == expected
                ),
            )
            assert evaluated


def test_cli_k8s_takes_the_alert_thresholds() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "serve", "render", "k8s", "--config", str(ONE_SERVER)]
        + ["--ttft-slo-ms", "1500"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    groups = prometheus_rule_groups(docs)
    t = AlertThresholds(ttft_slo_ms=1500)
    assert groups == render_alerts(load_config(ONE_SERVER), t)["groups"]
