"""What the planner reads: the shape of the model a deployment config serves, and the GPU
catalogue `serve/plan/gpus.yaml` (memory, links, and the roofline's bandwidth and peak bf16
FLOP/s; the node labels `render k8s` places pods by), refusing an entry that lacks a field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from serve.config.deployment import DeploymentConfig, is_local_path
from serve.model.shapes import SHAPES_DIR, ModelShape, ShapeError, known_models, read_shape_file

GPUS_FILE = Path(__file__).resolve().parent / "gpus.yaml"
# A GPU fits a config sized for a catalogue GPU when it reports at least 95% of that GPU's
# memory (NVML's figure, which nvidia-smi and GFD's nvidia.com/gpu.memory label print): GFD's
# README shows 39538 MiB on an A100-SXM4-40GB, 3.5% under the catalogue's 40960, and the
# next smaller class is always far below (80 GB -> 48 GB -> 24 GB). Used by `render k8s`'s
# node affinity and `python -m serve pick-config`.
MEMORY_SLACK = 0.05


@dataclass(frozen=True)
class Gpu:
    """One entry of the GPU catalogue."""

    name: str
    description: str
    memory_mib: int
    nvlink: bool
    max_per_node: int
    memory_bandwidth_gb_s: float  # peak device-memory bandwidth, decimal GB/s
    bf16_dense_tflops: float  # peak bf16 tensor-core TFLOP/s without sparsity
    # nvidia.com/gpu.product values GPU Feature Discovery gives its nodes (optional).
    gfd_products: tuple[str, ...] = ()

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024

    @property
    def bandwidth_bytes_s(self) -> float:
        return self.memory_bandwidth_gb_s * 1e9

    @property
    def peak_flops(self) -> float:
        return self.bf16_dense_tflops * 1e12


def min_gpu_memory_mib(gpu: Gpu) -> int:
    """The least memory (MiB) a GPU may report to run a config sized for `gpu`."""
    return math.floor(gpu.memory_mib * (1 - MEMORY_SLACK))


def shape_for_config(cfg: DeploymentConfig, build_stand_in: bool = True) -> ModelShape:
    """The shape of the model a config serves. The stand-in's comes from its built
    folder's config.json (built on first use unless `build_stand_in` is False, in which
    case an unbuilt stand-in raises ShapeError)."""
    if cfg.stand_in is not None:
        from serve.paths import standin_dir
        from serve.standin import tiny_model

        preset, seed = cfg.stand_in.preset, cfg.stand_in.seed
        folder = standin_dir(preset, seed)
        if build_stand_in:
            folder = tiny_model.ensure(preset, seed)
        elif not (folder / ".complete").exists():
            raise ShapeError(f"stand_in: the {preset} stand-in is not built yet ({folder})")
        return read_shape_file(folder / "config.json", f"stand-in {preset}")
    assert cfg.model is not None
    if is_local_path(cfg.model):
        path = Path(cfg.model).expanduser() / "config.json"
        return read_shape_file(path, Path(cfg.model).name)
    name = cfg.model.split("/", 1)[1]
    path = SHAPES_DIR / f"{name}.json"
    if not path.is_file():
        raise ShapeError(
            f"model: no shape data for {cfg.model!r} (known: {', '.join(known_models())}); "
            f"add serve/model/hub_configs/{name}.json from its config.json, or serve a local folder"
        )
    return read_shape_file(path, name)


GPU_FIELDS = (
    "description",
    "memory_mib",
    "nvlink",
    "max_per_node",
    "memory_bandwidth_gb_s",
    "bf16_dense_tflops",
)
POSITIVE_GPU_FIELDS = ("memory_mib", "max_per_node", "memory_bandwidth_gb_s", "bf16_dense_tflops")


def products(value: object) -> tuple[str, ...]:
    """A catalogue entry's `gfd_products`: a list of non-empty strings. Raises ValueError."""
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ValueError("gfd_products must be a list of product strings")
    return tuple(value)


def load_gpus(path: Path = GPUS_FILE) -> dict[str, Gpu]:
    """The GPU catalogue, by name. Raises ShapeError naming the GPU and the field."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ShapeError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ShapeError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ShapeError(f"{path}: expected a mapping of GPU name -> fields")
    gpus = {}
    for name, entry in data.items():
        where = f"{path}: GPU {name!r}"
        if not isinstance(entry, dict):
            raise ShapeError(f"{where}: expected a mapping of fields")
        missing = [f for f in GPU_FIELDS if f not in entry]
        if missing:
            raise ShapeError(
                f"{where} has no {', '.join(missing)} (every GPU needs all of: "
                f"{', '.join(GPU_FIELDS)})"
            )
        try:
            gpu = Gpu(
                name=str(name),
                description=str(entry["description"]),
                memory_mib=int(entry["memory_mib"]),
                nvlink=bool(entry["nvlink"]),
                max_per_node=int(entry["max_per_node"]),
                memory_bandwidth_gb_s=float(entry["memory_bandwidth_gb_s"]),
                bf16_dense_tflops=float(entry["bf16_dense_tflops"]),
                gfd_products=products(entry.get("gfd_products", [])),
            )
        except (TypeError, ValueError) as exc:
            raise ShapeError(f"{where}: unusable value ({exc})") from None
        bad = [f for f in POSITIVE_GPU_FIELDS if not getattr(gpu, f) > 0]
        if bad:
            raise ShapeError(f"{where}: {', '.join(bad)} must be > 0")
        gpus[gpu.name] = gpu
    return gpus
