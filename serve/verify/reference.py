"""transformers' answer to the same prompts: `Gemma3ForConditionalGeneration` and
`AutoProcessor` loaded from the folder the server loads, the same chat template, greedy
decoding, and the top-k log-probabilities of every step (log_softmax of the raw logits,
which is what vLLM's default `raw_logprobs` returns).

`image_attention="causal"` drops `token_type_ids`, so image tokens attend causally instead
of bidirectionally within each image (Gemma 3's mask): a deliberately different reference.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from serve.verify.compare import Generation

ImageAttention = Literal["bidirectional", "causal"]
TORCH_DTYPES = ("bfloat16", "float16", "float32")


class ReferenceError(Exception):
    """The reference model cannot be loaded or run (message fit for one `error:` line)."""


@dataclass
class ReferenceModel:
    """A loaded model + processor, ready to answer chat messages greedily."""

    model: Any  # Gemma3ForConditionalGeneration (or a PeftModel around it)
    processor: Any  # Gemma3Processor
    device: str


def load(
    folder: Path, dtype: str, device: str = "cpu", adapter_dir: Path | None = None
) -> ReferenceModel:
    """Load the weights in `folder` in `dtype` (one of TORCH_DTYPES) on `device`; with
    `adapter_dir`, wrap the model in that LoRA adapter (peft). Raises ReferenceError."""
    import torch
    from transformers import AutoProcessor, Gemma3ForConditionalGeneration

    if not (folder / "config.json").is_file():
        raise ReferenceError(f"{folder}: no config.json: not a model folder")
    if dtype not in TORCH_DTYPES:
        raise ReferenceError(f"dtype {dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
    try:
        model = Gemma3ForConditionalGeneration.from_pretrained(
            folder, dtype=getattr(torch, dtype), local_files_only=True
        )
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ReferenceError(f"cannot load {folder}: {str(exc).splitlines()[0]}") from None
    if adapter_dir is not None:
        try:
            from peft import PeftModel
        except ImportError:
            raise ReferenceError("an adapter needs peft: uv add peft") from None
        # PeftModel forwards generate() and the attributes the reference uses to the base.
        model = PeftModel.from_pretrained(model, str(adapter_dir))  # type: ignore[assignment]
    return ReferenceModel(model.to(device).eval(), processor, device)  # type: ignore[arg-type]


def hf_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """OpenAI chat messages -> (messages for transformers' chat template, PIL images in
    order), the way vLLM renders them: each image_url part becomes an `image` part."""
    from PIL import Image

    out, images = [], []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": [{"type": "text", "text": content}]})
            continue
        parts = []
        for part in content:
            if part["type"] == "image_url":
                url = part["image_url"]["url"]
                if not url.startswith("data:"):
                    raise ReferenceError("the reference takes images as data URLs only")
                data = base64.b64decode(url.split(",", 1)[1])
                images.append(Image.open(io.BytesIO(data)).convert("RGB"))
                parts.append({"type": "image"})
            else:
                parts.append(part)
        out.append({"role": m["role"], "content": parts})
    return out, images


def generate(
    ref: ReferenceModel,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    top_k: int,
    image_attention: ImageAttention = "bidirectional",
) -> Generation:
    """Greedy answer to `messages`: its token ids, each step's top-k log-probabilities (with
    the chosen token's) and the prompt's token ids."""
    import torch

    chat, images = hf_messages(messages)
    prompt = ref.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    inputs = ref.processor(
        text=prompt, images=images or None, return_tensors="pt", add_special_tokens=False
    )
    if image_attention == "causal":
        inputs.pop("token_type_ids", None)
    dtype = next(ref.model.parameters()).dtype
    inputs = {
        k: v.to(ref.device, dtype=dtype) if v.is_floating_point() else v.to(ref.device)
        for k, v in inputs.items()
    }
    n_prompt = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        out = ref.model.generate(
            **inputs,
            max_new_tokens=max_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
    tokens = out.sequences[0, n_prompt:].tolist()
    steps = []
    for token, logits in zip(tokens, out.logits, strict=False):
        logprobs = torch.log_softmax(logits[0].float(), dim=-1)
        values, ids = logprobs.topk(top_k)
        step = dict(zip(ids.tolist(), values.tolist(), strict=True))
        step[token] = logprobs[token].item()
        steps.append(step)
    return Generation(
        token_ids=tokens,
        logprobs=steps,
        prompt_token_ids=inputs["input_ids"][0].tolist(),
    )
