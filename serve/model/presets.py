"""The stand-in models' sizes, one Preset per name (tiny, bench, verify, volumes). Image
geometry is MedGemma 4B's (and 1.5 4B's) in every preset; serve.standin builds the model
from them.

The `verify` preset has tiny's sizes with two weights rescaled so that `python -m serve
verify` means something: random weights give near-uniform next-token distributions (ties
that any rounding flips) and transformers initialises the image projection to zeros (the
image would not reach the text at all).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Preset:
    """Sizes of one stand-in model. Image geometry is MedGemma 4B's in every preset."""

    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    head_dim: int
    text_intermediate: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    vocab_size: int
    max_position_embeddings: int
    sliding_window: int
    # Gain of the final RMSNorm (1 keeps transformers' init): scales every logit, so that
    # greedy decoding is decisive instead of a near-tie between random logits.
    logit_gain: float = 1.0
    # Std of the image projection (mm_input_projection_weight); None keeps transformers'
    # init, which is zeros: image embeddings are then zero and the image changes nothing.
    image_projection_std: float | None = None


PRESETS: dict[str, Preset] = {
    # Fast enough for tests: a few layers of width 64.
    "tiny": Preset(
        text_hidden=64,
        text_layers=6,
        text_heads=2,
        text_kv_heads=1,
        head_dim=32,
        text_intermediate=128,
        vision_hidden=32,
        vision_layers=1,
        vision_heads=2,
        vision_intermediate=64,
        vocab_size=1024,
        max_position_embeddings=8192,
        sliding_window=512,
    ),
    # Large enough that batching pays off visibly in benchmarks.
    "bench": Preset(
        text_hidden=512,
        text_layers=8,
        text_heads=8,
        text_kv_heads=4,
        head_dim=64,
        text_intermediate=2048,
        vision_hidden=128,
        vision_layers=2,
        vision_heads=2,
        vision_intermediate=256,
        vocab_size=4096,
        max_position_embeddings=8192,
        sliding_window=512,
    ),
}
# Tiny's sizes with decisive logits and an image that reaches the text (serve.verify).
PRESETS["verify"] = replace(PRESETS["tiny"], logit_gain=64.0, image_projection_std=0.08)
# The CPU twin of MedGemma 1.5 4B for CT/MR volumes (configs/deployments/cpu-volumes.yaml):
# tiny's widths, 1.5's shapes where serving volumes depends on them: the image geometry
# (every preset's), a 131,072-token context (an 85-slice volume is ~22.5 K tokens) and
# Gemma 3's 1,024-token sliding window on 5 of every 6 layers, so the KV cache and the
# prefix cache see a volume as the real model's would.
PRESETS["volumes"] = replace(PRESETS["tiny"], max_position_embeddings=131072, sliding_window=1024)
