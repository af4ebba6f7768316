"""What the render tests share: the shipped configs, `python -m serve render` as a
subprocess, and strict schema validation of a manifest (built-in kinds, the Prometheus
Operator's CRDs, the LeaderWorkerSet's pod templates)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import kubernetes_validate

from serve.config.deployment import load_config
from serve.render.k8s_monitor import MONITORING_API
from tests.conftest import REPO
from tests.unit.serve.render.test_k8s_monitor import validate_crd

CONFIGS = REPO / "configs" / "deployments"
DEPLOYMENTS = sorted(CONFIGS.glob("*.yaml"))
GPU_CONFIGS = [p for p in DEPLOYMENTS if load_config(p).device == "cuda"]
# The oldest Kubernetes still widely run, and the newest schema the package ships.
K8S_VERSIONS = ["1.29", kubernetes_validate.latest_version()]


def run_render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve", "render", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The manifests by kind, leaving out vllm-router's (serve.render.k8s_router)."""
    return {m["kind"]: m for m in manifests if not is_router(m)}


def is_router(manifest: dict[str, Any]) -> bool:
    return manifest["metadata"]["labels"].get("medgemma-serve/role") == "router"


def validate_strict(manifest: dict[str, Any], version: str) -> None:
    """Built-in kinds against their schema; the Prometheus Operator's CRDs against theirs
    (tests/unit/serve/render/test_k8s_monitor.py); the LeaderWorkerSet CRD (no schema
    shipped) through its two embedded pod templates, each as a core/v1 PodTemplate."""
    if manifest["apiVersion"] == MONITORING_API:
        validate_crd(manifest)
        return
    if manifest["kind"] != "LeaderWorkerSet":
        kubernetes_validate.validate(manifest, version, strict=True)
        return
    lwt = manifest["spec"]["leaderWorkerTemplate"]
    assert set(lwt) == {"size", "restartPolicy", "leaderTemplate", "workerTemplate"}, lwt
    for role in ("leaderTemplate", "workerTemplate"):
        wrapper = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{manifest['metadata']['name']}-{role.lower()}"},
            "template": lwt[role],
        }
        kubernetes_validate.validate(wrapper, version, strict=True)


def pod_labels_of(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]
