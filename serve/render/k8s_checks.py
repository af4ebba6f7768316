"""What `python -m serve render k8s` refuses about placement, keys, TLS and the NetworkPolicy,
each as one RenderError line naming the field; and gpu_type's catalogue entry, which the
placement rule (serve.render.k8s_placement) reads.

The schema (serve.config) checks each field's form at load; these are the rules that need
the GPU catalogue or concern Kubernetes only.
"""

from __future__ import annotations

from serve.config.deployment import DeploymentConfig
from serve.model.shapes import ShapeError
from serve.plan.inputs import Gpu, load_gpus
from serve.render.ray import RenderError


def placement_gpu(cfg: DeploymentConfig) -> Gpu | None:
    """gpu_type's catalogue entry when the pods are placed by GPU, else None."""
    k = cfg.kubernetes
    if cfg.device != "cuda" or k.gpu_placement == "none":
        return None
    if cfg.gpu_type is None:
        if k.gpu_placement == "product" and k.gpu_products is None:
            raise RenderError(
                "kubernetes.gpu_placement: product needs gpu_type (serve/plan/gpus.yaml) or "
                "kubernetes.gpu_products"
            )
        return None
    try:
        gpus = load_gpus()
    except ShapeError as exc:
        raise RenderError(str(exc)) from None
    gpu = gpus.get(cfg.gpu_type)
    if gpu is None:
        raise RenderError(
            f"gpu_type: {cfg.gpu_type!r} is not in serve/plan/gpus.yaml "
            f"(known: {', '.join(gpus)}); the pods are placed by its memory"
        )
    if k.gpu_placement == "product" and not (k.gpu_products or gpu.gfd_products):
        raise RenderError(
            f"kubernetes.gpu_placement: product, but serve/plan/gpus.yaml lists no "
            f"gfd_products for {gpu.name}: set kubernetes.gpu_products"
        )
    return gpu


def check_tls(cfg: DeploymentConfig) -> None:
    """TLS in a pod comes from a Secret; a file path of this machine means nothing there.
    (With `replicas:` the edge serves it: serve.render.k8s_pod.edge_serves_tls.)"""
    if cfg.ssl_certfile is not None and cfg.kubernetes.tls_secret is None:
        raise RenderError(
            "ssl_certfile: a file on this machine is not in the pod; put the certificate "
            "and key in a Secret (kubectl create secret tls NAME --cert=FILE --key=FILE) "
            "and set kubernetes.tls_secret: NAME"
        )


def check_network_policy(cfg: DeploymentConfig) -> None:
    """Client selectors that the rendered policy could not honour."""
    np = cfg.kubernetes.network_policy
    if not np.enabled:
        return
    named = [
        f"kubernetes.network_policy.{f}"
        for f in ("client_namespaces", "client_pods", "client_cidrs")
        if getattr(np, f)
    ]
    if cfg.replicas is not None and named:
        raise RenderError(
            f"{named[0]}: with `replicas:` the vLLM pods accept only vllm-router; the "
            "clients reach the router's Service, which this policy does not cover"
        )
    if (
        cfg.replicas is None
        and cfg.kubernetes.service_type != "ClusterIP"
        and not (np.client_cidrs)
    ):
        raise RenderError(
            f"kubernetes.network_policy.client_cidrs: a {cfg.kubernetes.service_type} "
            "Service's clients come from outside the cluster, which the policy would "
            "block; name their address blocks, or set network_policy.enabled: false"
        )


def check_keys(cfg: DeploymentConfig) -> None:
    """Service keys are checked by the edge in the router pod (serve.render.k8s_edge), from
    a Secret: a file path of this machine means nothing there."""
    k = cfg.kubernetes
    if cfg.replicas is None and (cfg.auth.keys_file is not None or k.keys_secret is not None):
        field = "auth.keys_file" if cfg.auth.keys_file is not None else "kubernetes.keys_secret"
        raise RenderError(
            f"{field}: render k8s checks service keys at the edge in front of `replicas:` "
            "only (a single vLLM pod has no key check for them): add `replicas:` or unset it"
        )
    if cfg.auth.keys_file is not None and k.keys_secret is None:
        raise RenderError(
            "auth.keys_file: a file on this machine is not in the pod; put it in a Secret "
            "(kubectl create secret generic NAME --from-file=keys=FILE) and set "
            "kubernetes.keys_secret: NAME"
        )


def check_production(cfg: DeploymentConfig) -> Gpu | None:
    """Every check of this module; returns the placement GPU (or None)."""
    check_keys(cfg)
    check_tls(cfg)
    check_network_policy(cfg)
    return placement_gpu(cfg)
