"""Ceilings for studies asked several questions: CT/MR volumes with follow-ups, mixed with
radiographs (pure).

A study is one set of images asked a first question and then `follow_ups` more, each a
separate request with the same images and instruction text and another question (the
client's recipe; scenario field `prompts.follow_ups`). The first request pays for the
images (the vision encoder, `images` x F_vision) and the whole prompt's prefill; with
prefix caching a follow-up finds the shared prefix in the KV cache (vLLM hashes images by
content) and prefills only its new tokens, which attend to the whole cached context. Per
replica of tp x pp GPUs, for a mix in which a share s_i of the studies is of kind i:

    compute   = sum_i s_i x (F_first_i + follow_ups_i x F_follow_i) / (tp x pp x peak x mfu)
    decode    = sum_i s_i x questions_i x (output tokens - 1) x step(B) / B
    studies/s = dp / (compute + decode); slices/s and questions/s follow

    F_first   images x F_vision + prefill of the prompt + the image-mask cost
              (serve/plan/mm_prefix.py), as the roofline's request (serve/plan/roofline.py)
    F_follow  prefill of the follow-up's new tokens after `cached` tokens (2 x layer weights
              x new tokens + their attention to the whole context + the LM head)
    step(B)   max(memory, compute) of one decode step of B sequences, B the studies of this
              mix that run at once (the studies table's `concurrent`: a study's questions
              run one after another, one sequence at a time), each reading the KV of its
              context (sliding layers capped at their window).

The new tokens of a follow-up are its question and the chat template's tail, plus half a
KV block on average: vLLM caches whole blocks only, so the prefix hit ends at the last
full block before the question. Without prefix caching a follow-up would cost what the
first question does (`uncached_follow_up_flops`), which the report prints beside it.
The model assumes the follow-up comes before its prefix is evicted: vLLM keeps a finished
request's blocks as cache until the KV cache needs them (least recently used first), so
under a full KV cache a late follow-up may pay for its images again. On the CPU twin the
follow-up also needs the API server's processed-image cache (`mm_processor_cache_gb`), or it
re-runs Gemma 3's image processor on every slice (configs/deployments/cpu-volumes.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass

from serve.model.shapes import ModelShape
from serve.plan.inputs import Gpu
from serve.plan.mm_prefix import MM_PREFIX_ATTENTION_EFFICIENCY, mm_prefix_cost
from serve.plan.roofline import (
    attention_flops,
    decoder_matrix_params,
    kv_bytes_per_token_layer,
    layer_positions,
    prefill_flops,
    vision_flops,
)


@dataclass(frozen=True)
class Study:
    """One kind of study: its images and the tokens of its questions."""

    name: str
    images: int
    prompt_tokens: int  # the first request's prompt: images, labels, instruction, question
    follow_ups: int  # questions after the first
    follow_up_tokens: int  # a follow-up's tokens after the shared prefix (its question)
    output_tokens: int  # per question


@dataclass(frozen=True)
class StudyWork:
    """The efficiency-independent work of one study (per replica)."""

    study: Study
    vision_flops: int  # all its images
    first_flops: int  # vision + prefill + the image-mask cost of the first question
    follow_up_flops: int  # one follow-up's prefill against the cached prefix
    uncached_follow_up_flops: int  # the same follow-up without prefix caching
    mean_kv_bytes: float  # KV one of its sequences reads per decode step, all layers
    decode_flops_per_token: float
    decode_steps: int  # per question

    @property
    def questions(self) -> int:
        return 1 + self.study.follow_ups


@dataclass(frozen=True)
class StudyCeiling:
    """A mix of studies at one pair of efficiency factors, all replicas."""

    name: str
    shares: tuple[float, ...]  # of each kind of study, in the order given
    batch: int  # sequences decoding together per replica
    step_s: float
    compute_s: float  # per study, mean over the mix
    decode_s: float  # per study: its questions' share of the decode steps
    studies_s: float
    images_s: float
    questions_s: float


def study_work(
    shape: ModelShape,
    study: Study,
    *,
    dtype_bytes: int,
    tp: int,
    block_size: int,
    mm_attention_efficiency: float = MM_PREFIX_ATTENTION_EFFICIENCY,
) -> StudyWork:
    """What one study costs, from the model's shape (see the module docstring)."""
    images = study.images if shape.vision is not None else 0
    per_image = 0
    if images and shape.vision is not None:
        per_image = vision_flops(shape.vision, shape.hidden_size, shape.mm_tokens_per_image).total
    prompt = study.prompt_tokens
    mm = mm_prefix_cost(shape, images, attention_flops(shape, 0, prompt), mm_attention_efficiency)
    first = images * per_image + prefill_flops(shape, prompt) + mm.total
    # The follow-up's prompt: the shared prefix, then its own question (about as long as the
    # first's); vLLM's hit ends at the last whole block of the prefix: half a block on average.
    shared = max(prompt - study.follow_up_tokens, 0)
    cached = shared - block_size // 2 if shared > block_size else 0
    follow = prefill_flops(shape, shared + study.follow_up_tokens, cached=cached)
    steps = max(study.output_tokens - 1, 0)
    positions = layer_positions(shape, prompt, prompt + steps) / steps if steps else 0.0
    decode_flops = (
        2 * (decoder_matrix_params(shape) + shape.vocab_size * shape.hidden_size)
        + 4 * shape.num_heads * shape.head_dim * positions
    )
    return StudyWork(
        study=study,
        vision_flops=images * per_image,
        first_flops=first,
        follow_up_flops=follow,
        uncached_follow_up_flops=first,
        mean_kv_bytes=kv_bytes_per_token_layer(shape, tp, dtype_bytes) * positions,
        decode_flops_per_token=decode_flops,
        decode_steps=steps,
    )


def mix_ceiling(
    name: str,
    mix: list[tuple[float, StudyWork]],
    gpu: Gpu,
    *,
    tp: int,
    pp: int,
    dp: int,
    batch: int,
    weight_bytes: int,
    bw_efficiency: float,
    mfu: float,
) -> StudyCeiling:
    """Studies/s of a mix (share, work) with `batch` sequences per replica decoding together."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    total = sum(share for share, _ in mix)
    if total <= 0:
        raise ValueError("a mix needs a positive share")
    mix = [(share / total, w) for share, w in mix]
    n = tp * pp
    bw = n * gpu.bandwidth_bytes_s * bw_efficiency
    flops = n * gpu.peak_flops * mfu
    # A decode step's sequences come from the mix in proportion to its decode steps.
    weights = [s * w.questions * w.decode_steps for s, w in mix]
    steps_weight = sum(weights) or 1.0
    mean_kv = sum(x * w.mean_kv_bytes for x, (_, w) in zip(weights, mix, strict=True))
    mean_dec = sum(x * w.decode_flops_per_token for x, (_, w) in zip(weights, mix, strict=True))
    memory_s = (pp * weight_bytes + batch * mean_kv / steps_weight) / bw
    step_s = max(memory_s, batch * mean_dec / steps_weight / flops)
    compute_s = (
        sum(s * (w.first_flops + w.study.follow_ups * w.follow_up_flops) for s, w in mix) / flops
    )
    decode_s = sum(s * w.questions * w.decode_steps for s, w in mix) * step_s / batch
    studies_s = dp / (compute_s + decode_s)
    return StudyCeiling(
        name=name,
        shares=tuple(s for s, _ in mix),
        batch=batch,
        step_s=step_s,
        compute_s=compute_s,
        decode_s=decode_s,
        studies_s=studies_s,
        images_s=studies_s * sum(s * w.study.images for s, w in mix),
        questions_s=studies_s * sum(s * w.questions for s, w in mix),
    )


def compute_ms(flops: int, gpu: Gpu, tp: int, pp: int, mfu: float) -> float:
    """Milliseconds of `flops` on one replica at this MFU."""
    return 1e3 * flops / (tp * pp * gpu.peak_flops * mfu)
