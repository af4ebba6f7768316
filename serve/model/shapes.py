"""Gemma 3 model shapes (layers, heads, KV heads, sliding window, vision tower): data, never code.

A hub model's shape comes from `serve/model/hub_configs/NAME.json` (the shape fields of its
published Hugging Face config.json, with a `_source` note); a local model folder's and the
stand-in's from the folder's own config.json. `parse_shape` is pure and reads both the nested
(Gemma3ForConditionalGeneration: `text_config`, `vision_config`) and the flat
(Gemma3ForCausalLM) layouts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHAPES_DIR = Path(__file__).resolve().parent / "hub_configs"
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
