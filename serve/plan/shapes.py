"""Model shapes (layers, heads, KV heads, sliding window, vision tower) for planning.

Shapes are data, never code: a hub model's come from `serve/plan/model_shapes/NAME.json`
(the shape fields of its published Hugging Face config.json, with a `_source` note); a
local model folder's and the stand-in's from the folder's own config.json. `parse_shape`
is pure and reads both the nested (Gemma3ForConditionalGeneration: `text_config`,
`vision_config`) and the flat (Gemma3ForCausalLM) layouts. `load_gpus` reads the GPU
catalogue `serve/plan/gpus.yaml` (memory, links, and the roofline's bandwidth and peak bf16
FLOP/s), refusing an entry that lacks a field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serve.config.deployment import DeploymentConfig, is_local_path

SHAPES_DIR = Path(__file__).resolve().parent / "model_shapes"
GPUS_FILE = Path(__file__).resolve().parent / "gpus.yaml"
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}


class ShapeError(ValueError):
    """No usable shape data for a model; the message names the field and what to do."""


@dataclass(frozen=True)
class VisionShape:
    """A SigLIP vision tower."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    image_size: int
    patch_size: int
    num_channels: int


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs to know about a Gemma 3 (MedGemma) model."""

    name: str
    source: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    sliding_window: int | None
    layer_types: tuple[str, ...]  # "full_attention" | "sliding_attention", one per layer
    tie_word_embeddings: bool
    vision: VisionShape | None
    mm_tokens_per_image: int

    @property
    def num_full_layers(self) -> int:
        return sum(1 for t in self.layer_types if t != "sliding_attention")

    @property
    def num_sliding_layers(self) -> int:
        return sum(1 for t in self.layer_types if t == "sliding_attention")


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

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024

    @property
    def bandwidth_bytes_s(self) -> float:
        return self.memory_bandwidth_gb_s * 1e9

    @property
    def peak_flops(self) -> float:
        return self.bf16_dense_tflops * 1e12


# Gemma 3 alternates five sliding-window layers with one global layer.
GEMMA3_SLIDING_PATTERN = 6


def gemma3_layer_types(n_layers: int, pattern: int = GEMMA3_SLIDING_PATTERN) -> tuple[str, ...]:
    """Gemma 3's attention layout: every `pattern`-th layer is global, the rest sliding."""
    return tuple(
        "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)
    )


def _layer_types(text: dict[str, Any], n_layers: int) -> tuple[str, ...]:
    """Explicit `layer_types`, else Gemma 3's pattern (`sliding_window_pattern`)."""
    types = text.get("layer_types")
    if types:
        if len(types) != n_layers:
            raise ShapeError(f"layer_types has {len(types)} entries for {n_layers} layers")
        return tuple(types)
    if not text.get("sliding_window"):
        return ("full_attention",) * n_layers
    pattern = int(text.get("sliding_window_pattern") or GEMMA3_SLIDING_PATTERN)
    return gemma3_layer_types(n_layers, pattern)


def parse_shape(config: dict[str, Any], name: str, source: str) -> ModelShape:
    """A ModelShape from a Hugging Face config.json dict (nested or flat layout)."""
    text = config.get("text_config") or config
    try:
        n_layers = int(text["num_hidden_layers"])
        heads = int(text["num_attention_heads"])
        hidden = int(text["hidden_size"])
        vision_cfg = config.get("vision_config")
        vision = None
        if vision_cfg:
            vision = VisionShape(
                hidden_size=int(vision_cfg["hidden_size"]),
                intermediate_size=int(vision_cfg["intermediate_size"]),
                num_layers=int(vision_cfg["num_hidden_layers"]),
                num_heads=int(vision_cfg["num_attention_heads"]),
                image_size=int(vision_cfg["image_size"]),
                patch_size=int(vision_cfg["patch_size"]),
                num_channels=int(vision_cfg.get("num_channels", 3)),
            )
        return ModelShape(
            name=name,
            source=source,
            hidden_size=hidden,
            intermediate_size=int(text["intermediate_size"]),
            num_layers=n_layers,
            num_heads=heads,
            num_kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            vocab_size=int(text["vocab_size"]),
            max_position_embeddings=int(text["max_position_embeddings"]),
            sliding_window=text.get("sliding_window"),
            layer_types=_layer_types(text, n_layers),
            tie_word_embeddings=bool(
                config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
            ),
            vision=vision,
            mm_tokens_per_image=int(config.get("mm_tokens_per_image") or 0) if vision else 0,
        )
    except KeyError as exc:
        raise ShapeError(f"{source}: config has no {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{source}: unusable shape value ({exc})") from None


def read_shape_file(path: Path, name: str) -> ModelShape:
    """Parse one config.json / model_shapes JSON file."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ShapeError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ShapeError(f"{path} is not valid JSON: {exc}") from None
    return parse_shape(data, name, str(path))


def known_models() -> list[str]:
    """Hub model names (the part after org/) with shape data in the repo."""
    return sorted(p.stem for p in SHAPES_DIR.glob("*.json"))


def shape_for_config(cfg: DeploymentConfig, build_stand_in: bool = True) -> ModelShape:
    """The shape of the model a config serves. The stand-in's comes from its built
    folder's config.json (built on first use unless `build_stand_in` is False, in which
    case an unbuilt stand-in raises ShapeError)."""
    if cfg.stand_in is not None:
        from serve.standin import tiny_model
        from serve.standin.location import standin_dir

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
            f"add serve/plan/model_shapes/{name}.json from its config.json, or serve a local folder"
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
            )
        except (TypeError, ValueError) as exc:
            raise ShapeError(f"{where}: unusable value ({exc})") from None
        bad = [f for f in POSITIVE_GPU_FIELDS if not getattr(gpu, f) > 0]
        if bad:
            raise ShapeError(f"{where}: {', '.join(bad)} must be > 0")
        gpus[gpu.name] = gpu
    return gpus
