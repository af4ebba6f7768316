"""Build a random-weight MedGemma-architecture model for machines without weights.

The model is a `Gemma3ForConditionalGeneration` with MedGemma 4B's image geometry
(SigLIP at 896 px, patch 14, 256 image tokens per image), Gemma 3's special tokens and
chat template, saved as bf16 safetensors in the published MedGemma key layout. Its
weights are random: the text it produces is meaningless. It exists so that the real
vLLM serving path (paged attention, continuous batching, the Gemma 3 multimodal
processor) can run and be tested on a CPU with nothing downloaded.

    python -m serve standin OUT_DIR [--preset tiny|bench|verify|volumes] [--seed N]

The `verify` preset has tiny's sizes with two weights rescaled so that `python -m serve
verify` means something: random weights give near-uniform next-token distributions (ties
that any rounding flips) and transformers initialises the image projection to zeros (the
image would not reach the text at all). `verify` multiplies the final norm's gain (logits
with a spread of several nats) and draws the image projection at random.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serve.model.presets import PRESETS, Preset
from serve.model.shapes import gemma3_layer_types
from serve.paths import build_once, standin_dir

RANDOM_WEIGHTS_NOTICE = (
    "RANDOM WEIGHTS: this is a tiny stand-in with MedGemma's architecture, not MedGemma. "
    "Its text output is meaningless and must never be read as medical information."
)

# Gemma 3's special tokens, in the order they get ids 0..N-1.
SPECIAL_TOKENS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
# vLLM's Gemma 3 processor looks these literal strings up in the vocabulary.
NEWLINE_TOKENS = ["\n", "\n\n", "\n\n\n", "\n\n\n\n"]

# Gemma 3's chat template (system text is prepended to the first user turn; an image
# part becomes <start_of_image>, which the processor expands to 256 soft tokens).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- else -%}"
    "{{ raise_exception('Invalid content type') }}"
    "{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# A small radiology-flavoured corpus to train the BPE vocabulary on (deterministic).
_CORPUS = """
You are an expert radiologist. Describe this X-ray. Describe this CT slice.
Findings: The lungs are clear. No pleural effusion or pneumothorax. The heart size is normal.
Impression: No acute cardiopulmonary abnormality. Mild cardiomegaly. Small left pleural effusion.
There is a nodule in the right upper lobe measuring 8 mm. Recommend follow-up CT in 3 months.
The mediastinal contours are within normal limits. Degenerative changes of the thoracic spine.
Summarize the report. Is the report consistent with the image? List the discrepancies.
Patient history: 64 year old male with cough and fever. Prior study shows consolidation.
MRI of the brain shows no acute infarct. Abdomen: liver, spleen, kidneys unremarkable.
Write a teaching case for medical students about this image. What are the key findings?
"""


def build_tokenizer(vocab_size: int, max_length: int):  # -> PreTrainedTokenizerFast
    """A small BPE trained on a fixed corpus, plus Gemma 3's special and newline tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Metaspace (like Gemma's SentencePiece) keeps newlines as plain characters.
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    alphabet = [chr(c) for c in range(32, 127)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(NEWLINE_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in NEWLINE_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_length,
        padding_side="left",
    )


def _published_key(key: str) -> str | None:
    """Map a transformers 5 state-dict key to the published MedGemma layout (None: drop)."""
    if key.startswith("model.vision_tower.head.") or key.startswith("vision_tower.head."):
        return None
    for new, published in (
        ("model.language_model.", "language_model.model."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("lm_head.", "language_model.lm_head."),
    ):
        if key.startswith(new):
            return published + key[len(new) :]
    if key.startswith("model.vision_tower."):
        rest = key[len("model.vision_tower.") :]
        if not rest.startswith("vision_model."):
            rest = "vision_model." + rest
        return "vision_tower." + rest
    return key


def rescale(model, p: Preset) -> None:  # model: Gemma3ForConditionalGeneration
    """Apply a preset's `logit_gain` and `image_projection_std` in place (nothing at their
    defaults, so the other presets keep their bytes)."""
    import torch

    with torch.no_grad():
        if p.logit_gain != 1.0:
            # Gemma's RMSNorm multiplies by (1 + weight); transformers initialises weight to 0.
            model.model.language_model.norm.weight.fill_(p.logit_gain - 1.0)
        if p.image_projection_std is not None:
            w = model.model.multi_modal_projector.mm_input_projection_weight
            w.copy_(torch.randn(w.shape, dtype=torch.float32) * p.image_projection_std)


def build(out_dir: Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Write the stand-in model to `out_dir` and return it. Same preset + seed: same bytes."""
    import torch
    from safetensors.torch import save_file
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        GenerationConfig,
        SiglipVisionConfig,
    )

    p = PRESETS[preset]
    tokenizer = build_tokenizer(p.vocab_size, p.max_position_embeddings)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text_config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=p.text_hidden,
        intermediate_size=p.text_intermediate,
        num_hidden_layers=p.text_layers,
        num_attention_heads=p.text_heads,
        num_key_value_heads=p.text_kv_heads,
        head_dim=p.head_dim,
        max_position_embeddings=p.max_position_embeddings,
        sliding_window=p.sliding_window,
        layer_types=list(gemma3_layer_types(p.text_layers)),
        pad_token_id=ids["<pad>"],
        eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]],
        bos_token_id=ids["<bos>"],
    )
    vision_config = SiglipVisionConfig(
        hidden_size=p.vision_hidden,
        intermediate_size=p.vision_intermediate,
        num_hidden_layers=p.vision_layers,
        num_attention_heads=p.vision_heads,
        image_size=896,
        patch_size=14,
        vision_use_head=False,  # type: ignore[call-arg]  # accepted via **kwargs
    )
    config = Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=256,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
    )
    config.architectures = ["Gemma3ForConditionalGeneration"]
    config.dtype = "bfloat16"

    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).to(torch.bfloat16).eval()  # type: ignore[arg-type]
    rescale(model, p)
    state = {}
    for key, tensor in model.state_dict().items():
        new = _published_key(key)
        if new is not None and new not in state:
            state[new] = tensor.detach().contiguous().clone()
    # Tied embeddings: the published checkpoints carry no separate lm_head.
    state.pop("language_model.lm_head.weight", None)

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config_dict = config.to_dict()
    config_dict["_medgemma_serve_notice"] = RANDOM_WEIGHTS_NOTICE
    config_dict["_medgemma_serve_preset"] = {"preset": preset, "seed": seed}
    (out_dir / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True))
    GenerationConfig(
        bos_token_id=ids["<bos>"],
        eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]],
        pad_token_id=ids["<pad>"],
        do_sample=False,
    ).save_pretrained(out_dir)
    image_processor = Gemma3ImageProcessor(
        size={"height": 896, "width": 896},
        do_pan_and_scan=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    processor.save_pretrained(out_dir)
    n_params = sum(t.numel() for t in state.values())
    (out_dir / "README.md").write_text(
        f"# medgemma-serve stand-in model ({preset}, seed {seed})\n\n"
        f"{RANDOM_WEIGHTS_NOTICE}\n\n"
        f"Parameters: {n_params:,}. Architecture: Gemma3ForConditionalGeneration, "
        "SigLIP 896 px / patch 14 / 256 image tokens (MedGemma 4B geometry).\n"
        "Built by `python -m serve standin`; never downloaded.\n"
    )
    (out_dir / ".complete").write_text(json.dumps({"preset": preset, "seed": seed}))
    return out_dir


def ensure(preset: str = "tiny", seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Return the folder of the stand-in model, building it first if it is not there."""
    return build_once(
        standin_dir(preset, seed, cache_dir), lambda tmp: build(tmp, preset=preset, seed=seed)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve standin",
        description="Build a random-weight MedGemma-architecture model (nothing is downloaded). "
        + RANDOM_WEIGHTS_NOTICE,
    )
    parser.add_argument(
        "out_dir",
        type=Path,
        nargs="?",
        help="folder to write the model into (default: the cache folder, where configs with "
        "`stand_in:` look; built once)",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0, help="weights are the same for a seed")
    args = parser.parse_args(argv)
    try:
        if args.out_dir is None:
            out = ensure(args.preset, args.seed)
        else:
            out = build(args.out_dir, preset=args.preset, seed=args.seed)
    except OSError as exc:
        print(f"error: cannot write the model to {args.out_dir}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.preset} stand-in model to {out}\n{RANDOM_WEIGHTS_NOTICE}")
    return 0
