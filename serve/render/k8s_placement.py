"""Where the vLLM pods may run (pure): node affinity from the config's `gpu_type`, on the
node labels NVIDIA GPU Feature Discovery (GFD, part of the GPU Operator) writes.

The rule (kubernetes.gpu_placement: memory, the default):
- required: `nvidia.com/gpu.memory` (each GPU's total memory in MiB, from NVML) above 95%
  of gpu_type's `memory_mib` in serve/plan/gpus.yaml. The config's sizes (max_num_seqs,
  max_model_len, gpu_memory_utilization) were planned for that memory, and vLLM's KV cache
  is a share of the device's total, so a smaller GPU gets less cache than planned or does
  not start. Memory, not the product name, because product strings differ by SKU (SXM,
  PCIe, NVL), driver generation ("A100-SXM4-40GB" before "NVIDIA-A100-SXM4-40GB") and
  sharing ("-SHARED"), while the memory label is one number on every one. The 5% slack
  covers what GFD reports below the catalogue's figure: its README shows 39538 MiB for an
  A100-SXM4-40GB (catalogue: 40960); the next smaller class is always far below (80 GB ->
  48 GB -> 24 GB). A MIG slice reports its own, smaller memory and is excluded too.
- preferred (weight 100): `nvidia.com/gpu.product` In gpu_type's `gfd_products` (or
  kubernetes.gpu_products): among the nodes that fit, the GPU the config was sized for.

`product` requires the product strings instead; `none` renders no GPU rule. The config's
kubernetes.node_selector applies as well, as a nodeSelector (a node must satisfy both).
"""

from __future__ import annotations

import copy
from typing import Any

from serve.config.deployment import DeploymentConfig
from serve.plan.inputs import Gpu, min_gpu_memory_mib

GFD_MEMORY = "nvidia.com/gpu.memory"
GFD_PRODUCT = "nvidia.com/gpu.product"


def products(cfg: DeploymentConfig, gpu: Gpu) -> list[str]:
    """The product strings to prefer or require: the config's own, else the catalogue's."""
    return list(cfg.kubernetes.gpu_products or gpu.gfd_products)


def node_affinity(cfg: DeploymentConfig, gpu: Gpu | None) -> dict[str, Any] | None:
    """The pods' `affinity`, or None (a CPU config, no gpu_type, or gpu_placement: none).
    `gpu` is gpu_type's catalogue entry; serve.render.k8s_checks has checked that the
    `product` placement has product strings."""
    placement = cfg.kubernetes.gpu_placement
    if cfg.device != "cuda" or gpu is None or placement == "none":
        return None
    wanted = products(cfg, gpu)
    product = {"key": GFD_PRODUCT, "operator": "In", "values": wanted}
    if placement == "product":
        return {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [product]}]
                }
            }
        }
    # Gt compares the label as an integer: strictly above the floor.
    memory = {"key": GFD_MEMORY, "operator": "Gt", "values": [str(min_gpu_memory_mib(gpu) - 1)]}
    affinity: dict[str, Any] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [memory]}]
        }
    }
    if wanted:
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {"weight": 100, "preference": {"matchExpressions": [product]}}
        ]
    return {"nodeAffinity": affinity}


def pod_specs(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs of a rendered Deployment or LeaderWorkerSet (leader and worker)."""
    if workload["kind"] == "LeaderWorkerSet":
        lwt = workload["spec"]["leaderWorkerTemplate"]
        return [lwt["leaderTemplate"]["spec"], lwt["workerTemplate"]["spec"]]
    return [workload["spec"]["template"]["spec"]]


def place(workload: dict[str, Any], affinity: dict[str, Any] | None) -> dict[str, Any]:
    """`workload` with `affinity` in each of its pod specs (a copy each: no YAML anchors)."""
    if affinity is not None:
        for spec in pod_specs(workload):
            spec["affinity"] = copy.deepcopy(affinity)
    return workload
