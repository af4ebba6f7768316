"""The deployment's monitoring as Kubernetes manifests (pure): Prometheus Operator objects
(monitoring.coreos.com/v1 CRDs) and the Grafana dashboard.

A PodMonitor scrapes every serving pod's /metrics (PodMonitor, not ServiceMonitor: with
`replicas:` the client Service selects the router, so a ServiceMonitor on it would never
reach the replicas), and a second one scrapes vllm-router's metrics port. Their
relabelings give every target the labels serve.monitor.scrape gives it locally, which the
dashboard's queries and the alert expressions group by: `replica` (the pod's name, or
"router") and `role` ("replica" or "router"). The Operator adds `namespace` and `pod`
itself (what prometheus-adapter needs for the autoscaler's metric).

The PrometheusRule carries `serve.render.alerts.render_alerts(cfg, thresholds)["groups"]`
unchanged and the ConfigMap `serve.render.dashboard.render_dashboard(cfg)`, labelled
`grafana_dashboard: "1"` for the Grafana sidecar of kube-prometheus-stack.
"""

from __future__ import annotations

import json
from typing import Any

from serve.config.deployment import DeploymentConfig
from serve.render.alerts import AlertThresholds, render_alerts
from serve.render.dashboard import render_dashboard
from serve.render.k8s_pod import labels, meta, object_name, serves_tls, serving_role
from serve.render.k8s_router import router_labels, router_meta
from serve.render.ray import RenderError

MONITORING_API = "monitoring.coreos.com/v1"
# A 1m rate() window (serve.render.dashboard.RATE_WINDOW) then spans four scrapes; the
# Operator's default of 30s would leave two.
SCRAPE_INTERVAL = "15s"
METRICS_PATH = "/metrics"
# The label kube-prometheus-stack's Grafana sidecar looks for on dashboard ConfigMaps.
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"
Manifest = dict[str, Any]


def set_label(name: str, value: str) -> dict[str, Any]:
    """A relabeling that sets `name` to a fixed value."""
    return {"action": "replace", "targetLabel": name, "replacement": value}


def replica_relabelings() -> list[dict[str, Any]]:
    """replica = the pod's name (unique among the pods scraped at once), role = replica."""
    return [
        {
            "action": "replace",
            "sourceLabels": ["__meta_kubernetes_pod_name"],
            "targetLabel": "replica",
        },
        set_label("role", "replica"),
    ]


def router_relabelings() -> list[dict[str, Any]]:
    """replica = role = router, as serve.monitor.scrape labels the local router."""
    return [set_label("replica", "router"), set_label("role", "router")]


def replica_pod_monitor(cfg: DeploymentConfig) -> Manifest:
    """Every serving pod of the deployment (the leaders only for a LeaderWorkerSet: the
    Ray workers serve no HTTP)."""
    endpoint: dict[str, Any] = {
        "port": "http",
        "path": METRICS_PATH,
        "interval": SCRAPE_INTERVAL,
        "relabelings": replica_relabelings(),
    }
    if serves_tls(cfg):
        # As serve.monitor.scrape: the pod's certificate need not name its pod address.
        endpoint["scheme"] = "https"
        endpoint["tlsConfig"] = {"insecureSkipVerify": True}
    return {
        "apiVersion": MONITORING_API,
        "kind": "PodMonitor",
        "metadata": meta(cfg),
        "spec": {
            "selector": {"matchLabels": {**labels(cfg), "medgemma-serve/role": serving_role(cfg)}},
            "podMetricsEndpoints": [endpoint],
        },
    }


def router_pod_monitor(cfg: DeploymentConfig) -> Manifest:
    return {
        "apiVersion": MONITORING_API,
        "kind": "PodMonitor",
        "metadata": router_meta(cfg),
        "spec": {
            "selector": {"matchLabels": router_labels(cfg)},
            "podMetricsEndpoints": [
                {
                    "port": "metrics",
                    "path": METRICS_PATH,
                    "interval": SCRAPE_INTERVAL,
                    "relabelings": router_relabelings(),
                }
            ],
        },
    }


def prometheus_rule(cfg: DeploymentConfig, thresholds: AlertThresholds | None = None) -> Manifest:
    return {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": meta(cfg),
        "spec": {"groups": render_alerts(cfg, thresholds)["groups"]},
    }


def dashboard_key(cfg: DeploymentConfig) -> str:
    """The file name the Grafana sidecar writes: one per deployment, as the sidecar puts
    the dashboards of every namespace into one folder."""
    return f"{object_name(cfg)}.json"


def dashboard_config_map(cfg: DeploymentConfig) -> Manifest:
    metadata = meta(cfg, "-dashboard")
    metadata["labels"] = {**metadata["labels"], GRAFANA_DASHBOARD_LABEL: "1"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {dashboard_key(cfg): json.dumps(render_dashboard(cfg))},
    }


def monitoring_manifests(
    cfg: DeploymentConfig, thresholds: AlertThresholds | None = None
) -> list[Manifest]:
    """The PodMonitor(s), the PrometheusRule and the dashboard ConfigMap."""
    monitors = [replica_pod_monitor(cfg)]
    if cfg.replicas is not None:
        monitors.append(router_pod_monitor(cfg))
    return [*monitors, prometheus_rule(cfg, thresholds), dashboard_config_map(cfg)]


def prometheus_rule_groups(manifests: list[Manifest]) -> list[dict[str, Any]]:
    """The rule groups of the one PrometheusRule among rendered manifests: what a
    Prometheus loads from it (a rule file is `{"groups": ...}`)."""
    rules = [m for m in manifests if m.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        raise RenderError(f"expected one PrometheusRule among the manifests, found {len(rules)}")
    groups: list[dict[str, Any]] = rules[0]["spec"]["groups"]
    return groups
