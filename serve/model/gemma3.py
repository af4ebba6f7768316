"""Gemma 3's known pitfalls, checked before vLLM's minute-long start (pure): fp16, a context
longer than the model's, image processor options Gemma 3 does not have."""

from __future__ import annotations

import re
from typing import Any

# Gemma 3's image processor options (transformers' Gemma3ProcessorKwargs images_kwargs).
GEMMA3_IMAGE_KWARGS: dict[str, type] = {
    "do_convert_rgb": bool,
    "do_pan_and_scan": bool,
    "pan_and_scan_min_crop_size": int,
    "pan_and_scan_max_num_crops": int,
    "pan_and_scan_min_ratio_to_activate": float,
}
GEMMA3_NAME = re.compile(r"medgemma|gemma-?3", re.IGNORECASE)
# Gemma 3 attends both ways within an image: an image split across prefill steps cannot be
# computed exactly, so vLLM forces disable_chunked_mm_input on CUDA and the launcher passes
# it on the CPU (serve/command/argv.py); a config may not turn it off.
SPLIT_IMAGES_REFUSED = (
    "disable_chunked_mm_input: false would let vLLM split an image across prefill steps, "
    "where Gemma 3's bidirectional attention within the image cannot be exact (vLLM forces "
    "it on for Gemma 3 on CUDA; the launcher passes it on the CPU): remove it from extra_args"
)


def is_gemma3(model: str, hf_config: dict[str, Any] | None) -> bool:
    """Whether a model is Gemma 3 (every MedGemma, the stand-in): by its config.json's
    model_type or architectures, else (no config known) by its name."""
    if hf_config and ("model_type" in hf_config or "architectures" in hf_config):
        archs = hf_config.get("architectures") or []
        return str(hf_config.get("model_type", "")).startswith("gemma3") or any(
            str(a).startswith("Gemma3") for a in archs
        )
    return bool(GEMMA3_NAME.search(model))


def context_length(hf_config: dict[str, Any] | None) -> int | None:
    """The model's max_position_embeddings (text_config's for a multimodal model), if known."""
    if not hf_config:
        return None
    text = hf_config.get("text_config") or hf_config
    value = text.get("max_position_embeddings") if isinstance(text, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def gemma3_pitfall(
    dtype: str,
    max_model_len: int | None,
    mm_processor_kwargs: dict[str, Any] | None,
    model: str,
    hf_config: dict[str, Any] | None,
) -> str | None:
    """The first known pitfall a config walks into, as one message, or None (pure).
    fp16 with Gemma 3; max_model_len above the model's context; an image processor
    option Gemma 3 does not have (or a value of the wrong type)."""
    gemma3 = is_gemma3(model, hf_config)
    if gemma3 and dtype == "float16":
        return (
            f"dtype: float16 is refused for Gemma 3 models ({model}): Gemma 3's activations "
            "overflow float16's range and the output degenerates; Google and vLLM recommend "
            "bfloat16. Use dtype: bfloat16 (or auto)"
        )
    limit = context_length(hf_config)
    if max_model_len is not None and limit is not None and max_model_len > limit:
        return (
            f"max_model_len: {max_model_len} is above the context length of {model}, {limit} "
            f"(max_position_embeddings); set max_model_len to at most {limit} or leave it unset"
        )
    if gemma3 and mm_processor_kwargs:
        for key, value in mm_processor_kwargs.items():
            kind = GEMMA3_IMAGE_KWARGS.get(key)
            if kind is None:
                return (
                    f"mm_processor_kwargs: {key!r} is not a Gemma 3 image processor option "
                    f"(known: {', '.join(GEMMA3_IMAGE_KWARGS)})"
                )
            ok = (
                isinstance(value, bool)
                if kind is bool
                else isinstance(value, (int, float) if kind is float else int)
                and not isinstance(value, bool)
                and value > 0
            )
            if not ok:
                want = "true or false" if kind is bool else f"a positive {kind.__name__}"
                return f"mm_processor_kwargs: {key} is {value!r}, not {want}"
    return None
