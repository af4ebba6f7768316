"""Build a random LoRA adapter (peft) for the random-weight stand-in model, for tests.

The adapter targets the language model's linear layers (q/k/v/o and gate/up/down of every
decoder layer; never the vision tower), has non-zero A and B drawn from a seeded
generator and is saved with peft's `save_pretrained`, so vLLM loads it like any
fine-tune. Its B is scaled so that greedy output visibly differs from the base model's.
Its text is as meaningless as the base's.

    python -m serve.standin.adapter OUT_DIR --base BASE_DIR [--rank 8] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serve.paths import build_once
from serve.paths import cache_dir as default_cache_dir

# Gemma 3's language-model linear layers that vLLM can serve LoRA on (its packed
# qkv_proj and gate_up_proj are split back into these by peft's names).
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Only the language model's modules: the SigLIP tower has q/k/v_proj of its own.
TARGET_REGEX = r".*language_model.*\.(" + "|".join(TARGET_MODULES) + r")"
# Scale of the random weights: large enough that argmax tokens change on the tiny model.
INIT_STD = 0.5


def adapter_dir(base_dir: Path, rank: int, seed: int, root: Path | None = None) -> Path:
    """The folder of one stand-in adapter for the stand-in in `base_dir` (pure)."""
    return (root or default_cache_dir()) / f"{base_dir.name}-lora-r{rank}-seed{seed}"


def build(out_dir: Path, base_dir: Path, rank: int = 8, seed: int = 1) -> Path:
    """Write a peft LoRA adapter for the model in `base_dir` to `out_dir`. Same base,
    rank and seed: same weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = Gemma3ForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,  # scaling alpha / r = 1
        target_modules=TARGET_REGEX,
        lora_dropout=0.0,
        bias="none",
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if "lora_A" in name or "lora_B" in name:
                fan_in = param.shape[1]
                param.copy_(torch.randn(param.shape, generator=gen) * INIT_STD / fan_in**0.5)
    peft_model.to(torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir))
    # peft writes the absolute base folder; keep it, it is what the adapter was built on.
    (out_dir / ".complete").write_text(
        json.dumps({"base": str(base_dir), "rank": rank, "seed": seed})
    )
    return out_dir


def ensure(base_dir: Path, rank: int = 8, seed: int = 1, root: Path | None = None) -> Path:
    """The folder of the stand-in adapter, built first if it is not there."""
    return build_once(
        adapter_dir(base_dir, rank, seed, root),
        lambda tmp: build(tmp, base_dir, rank=rank, seed=seed),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve.standin.adapter",
        description="Build a random LoRA adapter for a stand-in model (nothing is downloaded).",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the adapter into")
    parser.add_argument("--base", type=Path, required=True, help="the stand-in model's folder")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not (args.base / "config.json").is_file():
        print(f"error: --base {args.base} has no config.json", file=sys.stderr)
        return 2
    if args.rank < 1:
        print(f"error: --rank {args.rank}: must be at least 1", file=sys.stderr)
        return 2
    try:
        out = build(args.out_dir, args.base, rank=args.rank, seed=args.seed)
    except OSError as exc:
        print(f"error: cannot write the adapter to {args.out_dir}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote a rank-{args.rank} LoRA adapter to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
