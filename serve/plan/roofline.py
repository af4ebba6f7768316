"""Throughput ceiling of a deployment (pure): a roofline of one typical request.

The model, per replica of tp x pp GPUs (dp replicas multiply the result):

    B         = min(max_num_seqs, requests of this shape the KV cache holds): the
                sequences that decode together in every step
    step(B)   = max((pp x W + B x KV) / (tp x pp x bandwidth x bw_eff),      memory
                    B x F_dec / (tp x pp x peak x mfu))                       compute
    request   = (images x F_vision + F_prefill + F_mm) / (tp x pp x peak x mfu)  its compute
              + (output tokens - 1) x step(B) / B                           its decode share
    req/s     = dp / request;  output tok/s = req/s x output tokens

    W         weight bytes one decode step reads: every matrix and norm of the decoder
              layers, plus the LM head (vocab x hidden; Gemma ties it to the embedding
              matrix, read whole once per step). The vision tower and the projector are
              not read while decoding.
    KV        K and V bytes one sequence reads per step, the mean over its decode steps:
              2 x kv_heads x head_dim x dtype bytes per token and layer, times the context
              on global layers and min(context, window) on sliding-window layers.
    F_vision  SigLIP FLOPs per image, patches = (image_size / patch_size)^2 (4,096 at
              896 / 14). Per layer: 2 x (4 h^2 + 2 h i) x patches for q, k, v, o and the
              two MLP matrices, plus 4 x patches^2 x h for attention scores and values;
              plus the patch embedding (2 x channels x patch^2 x h per patch) and the
              projector (2 x h x text hidden per image token). Biases, norms, softmax and
              GELU are not counted (under 1%).
    F_prefill 2 x decoder-layer matrix parameters (no embedding) x prompt tokens, plus
              causal attention (4 x heads x head_dim per query-key pair; query i sees i keys,
              min(i, window) on sliding layers), plus the LM head for the last position,
              which yields the first output token (the other output tokens are decode steps).
    F_mm      what Gemma 3's bidirectional attention within each image costs on vLLM's GPU
              backends (more query-key pairs, and the prompt's attention in Triton's
              image-mask kernel at a lower efficiency): serve/plan/mm_prefix.py, with the
              vLLM source it follows.
    F_dec     FLOPs per decoded token: 2 x (layer matrices + LM head) + attention over the
              mean context.

The prompt is images x (image tokens + 4 wrapper tokens) + text tokens; Gemma 3's
processor resizes every image to 896 x 896, so an image is 256 tokens whatever its size.
The hard bound is the same model with bw_eff = mfu = 1.

What the model assumes, and leaves out:
- Compute and decode time add up. vLLM runs the vision encoder before the decoder's
  forward pass, and a prefill chunk's FLOPs lengthen the decode step it joins. Chunked
  prefill does overlap some of it (the linear layers read their weights once for the
  decode and prefill tokens of a step), so `overlap_req_s` gives the bound if ALL compute
  overlapped ALL memory traffic: dp / max(bytes / bandwidth, FLOPs / peak) per request.
- Communication (TP all-reduce, PP sends), kernel launches, sampling, scheduling and
  image preprocessing on the CPU are not counted: the efficiency factors stand for them.
- TP splits weights, KV heads (replicated beyond their number) and FLOPs over tp GPUs. PP
  is an ideal pipeline of pp micro-batches of B/pp: every stage reads its weights once per
  micro-batch, so weight reads do not shrink with pp, while KV reads and FLOPs spread.
- All B running requests count as decoding (none waiting for their prefill).

How it compares with the figures in the users' issue for MedGemma 4B bf16 on one H100 (one
896 px image, ~300 text tokens in, 300 out): the vision encoder (5.46 TFLOP per image)
and the KV per token (139,264 B = 136 KiB) agree. Their ~33 req/s at 70% / 60% is close
to this model at B = 256 (31.3 req/s; 33.4 at B = 512). Their 100 req/s hard bound is
not: here a request's compute (vision + prefill, 9.1 TFLOP: 9.2 ms at 989 TFLOP/s) and
its decode (299 steps reading ~99 MB of KV each, 8.8 ms at 3.35 TB/s, plus its 1/256
share of the weight reads, 2.7 ms) are phases that add, giving 48 req/s. ~100 req/s would
need one phase hidden entirely under the other (compute alone allows 109 req/s, decode
alone 87), and even then `overlap_req_s` caps it at 86 req/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from serve.model.shapes import ModelShape, VisionShape
from serve.plan import capacity as cap
from serve.plan.inputs import Gpu
from serve.plan.mm_prefix import MM_PREFIX_ATTENTION_EFFICIENCY, MmPrefixCost, mm_prefix_cost

DEFAULT_BW_EFFICIENCY = 0.70
DEFAULT_MFU = 0.60


@dataclass(frozen=True)
class VisionFlops:
    """FLOPs of one image through the SigLIP tower and the projector."""

    patches: int
    linear_per_layer: int
    attention_per_layer: int
    layers: int
    patch_embedding: int
    projector: int

    @property
    def total(self) -> int:
        per_layer = self.linear_per_layer + self.attention_per_layer
        return self.layers * per_layer + self.patch_embedding + self.projector


@dataclass(frozen=True)
class Ceiling:
    """The model evaluated at one pair of efficiency factors."""

    bw_efficiency: float
    mfu: float
    step_s: float  # one decode step of the whole batch
    step_bound: Literal["memory", "compute"]
    compute_s: float  # one request's vision + prefill
    decode_s: float  # one request's share of the decode steps
    req_s: float  # all replicas
    tok_s: float  # output tokens per second, all replicas
    token_interval_s: float  # per stream at this rate: batch / (req/s per replica x steps)


@dataclass(frozen=True)
class Roofline:
    """The inputs of the roofline (per replica unless named) and its two ceilings."""

    device: str
    bandwidth_gb_s: float
    peak_tflops: float
    tp: int
    pp: int
    dp: int
    batch: int
    images: int
    prompt_tokens: int
    output_tokens: int
    decode_steps: int
    vision: VisionFlops | None
    vision_flops: int  # per image
    prefill_flops: int  # per request, text decoder
    request_flops: int  # images x vision + prefill + the image-mask cost
    mm_prefix: MmPrefixCost  # the image-mask cost (serve.plan.mm_prefix)
    decoder_matrix_params: int
    kv_bytes_per_token: int  # all layers, below the sliding window
    mean_context: float
    mean_kv_bytes: float  # read per sequence per decode step
    weight_bytes: int  # read per decode step
    decode_flops_per_token: float
    ceiling: Ceiling
    hard_bound: Ceiling
    overlap_req_s: float  # all compute hidden under all memory traffic, at 100%


def vision_flops(v: VisionShape, text_hidden: int, image_tokens: int) -> VisionFlops:
    """SigLIP FLOPs of one image (see the module docstring for the terms)."""
    h, patches = v.hidden_size, (v.image_size // v.patch_size) ** 2
    matrices = 4 * h * h + 2 * h * v.intermediate_size  # q, k, v, o; fc1, fc2
    return VisionFlops(
        patches=patches,
        linear_per_layer=2 * matrices * patches,
        attention_per_layer=4 * patches * patches * h,
        layers=v.num_layers,
        patch_embedding=2 * v.num_channels * v.patch_size**2 * h * patches,
        projector=2 * h * text_hidden * image_tokens,
    )


def decoder_matrix_params(shape: ModelShape) -> int:
    """Weights of the decoder layers' matrices (q, k, v, o, gate, up, down); no embedding."""
    h, hd = shape.hidden_size, shape.head_dim
    attn = h * hd * (2 * shape.num_heads + 2 * shape.num_kv_heads)
    return shape.num_layers * (attn + 3 * h * shape.intermediate_size)


def attended(tokens: int, window: int | None) -> int:
    """Keys seen by queries 1..tokens: sum of min(i, window), causal."""
    if window is None or tokens <= window:
        return tokens * (tokens + 1) // 2
    return window * (window + 1) // 2 + (tokens - window) * window


def layer_positions(shape: ModelShape, first: int, last: int) -> int:
    """Sum over layers of the keys read by queries first+1..last (each attends to its
    position, capped at the window on sliding layers)."""
    w = shape.sliding_window
    full = attended(last, None) - attended(first, None)
    sliding = attended(last, w) - attended(first, w)
    return shape.num_full_layers * full + shape.num_sliding_layers * sliding


def attention_flops(shape: ModelShape, first: int, last: int) -> int:
    """Causal attention FLOPs of queries first+1..last (scores and values, all layers)."""
    return 4 * shape.num_heads * shape.head_dim * layer_positions(shape, first, last)


def prefill_flops(shape: ModelShape, prompt_tokens: int, cached: int = 0) -> int:
    """Text-decoder FLOPs of one prompt, including the logits of its last position; with
    `cached` tokens of it in the prefix cache, only the rest (attending to all of it)."""
    linear = 2 * decoder_matrix_params(shape) * (prompt_tokens - cached)
    attention = attention_flops(shape, cached, prompt_tokens)
    return linear + attention + 2 * shape.vocab_size * shape.hidden_size


def weight_bytes_per_step(shape: ModelShape, dtype_bytes: int) -> int:
    """Decoder layers (matrices and norms), final norm and LM head, read once per step."""
    p = cap.param_counts(shape)
    lm_head = shape.vocab_size * shape.hidden_size
    return (p.per_layer * p.layers + lm_head + shape.hidden_size) * dtype_bytes


def kv_bytes_per_token_layer(shape: ModelShape, tp: int, dtype_bytes: int) -> int:
    """K and V of one token in one layer, summed over the TP ranks (replicas included)."""
    return cap.kv_bytes_per_token_per_layer(shape, tp, dtype_bytes) * tp


def efficiency_ceiling(r: _Work, bw_efficiency: float, mfu: float, gpu: Gpu) -> Ceiling:
    """Evaluate the model of the module docstring at these efficiency factors."""
    n = r.tp * r.pp
    bw = n * gpu.bandwidth_bytes_s * bw_efficiency
    flops = n * gpu.peak_flops * mfu
    memory_s = (r.pp * r.weight_bytes + r.batch * r.mean_kv_bytes) / bw
    compute_step_s = r.batch * r.decode_flops_per_token / flops
    step_s = max(memory_s, compute_step_s)
    compute_s = r.request_flops / flops
    decode_s = r.decode_steps * step_s / r.batch
    request_s = compute_s + decode_s
    req_s = r.dp / request_s
    return Ceiling(
        bw_efficiency=bw_efficiency,
        mfu=mfu,
        step_s=step_s,
        step_bound="memory" if memory_s >= compute_step_s else "compute",
        compute_s=compute_s,
        decode_s=decode_s,
        req_s=req_s,
        tok_s=req_s * r.output_tokens,
        # Little's law: each of the batch's requests lives batch x request_s and gets one
        # token per decode step; new requests' vision and prefill lengthen the steps.
        token_interval_s=r.batch * request_s / r.decode_steps if r.decode_steps else 0.0,
    )


@dataclass(frozen=True)
class _Work:
    """The efficiency-independent part of a Roofline, to evaluate ceilings on."""

    tp: int
    pp: int
    dp: int
    batch: int
    weight_bytes: int
    mean_kv_bytes: float
    decode_flops_per_token: float
    request_flops: int
    decode_steps: int
    output_tokens: int


def make_roofline(
    shape: ModelShape,
    gpu: Gpu,
    *,
    dtype_bytes: int,
    tp: int,
    pp: int,
    dp: int,
    batch: int,
    images: int,
    text_tokens: int,
    output_tokens: int,
    bw_efficiency: float = DEFAULT_BW_EFFICIENCY,
    mfu: float = DEFAULT_MFU,
    mm_attention_efficiency: float = MM_PREFIX_ATTENTION_EFFICIENCY,
) -> Roofline:
    """The throughput ceiling of `batch` concurrent requests of this shape per replica."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    vision = None
    if images and shape.vision is not None:
        vision = vision_flops(shape.vision, shape.hidden_size, shape.mm_tokens_per_image)
    per_image = vision.total if vision else 0
    prompt = images * (shape.mm_tokens_per_image + cap.IMAGE_WRAPPER_TOKENS) + text_tokens
    steps = max(output_tokens - 1, 0)
    prefill = prefill_flops(shape, prompt)
    mm = mm_prefix_cost(
        shape, images if vision else 0, attention_flops(shape, 0, prompt), mm_attention_efficiency
    )
    kv_layer = kv_bytes_per_token_layer(shape, tp, dtype_bytes)
    # Decode step k (1..steps) reads the KV of prompt + k positions.
    positions = layer_positions(shape, prompt, prompt + steps) / steps if steps else 0.0
    dec_flops = (
        2 * (decoder_matrix_params(shape) + shape.vocab_size * shape.hidden_size)
        + 4 * shape.num_heads * shape.head_dim * positions
    )
    work = _Work(
        tp=tp,
        pp=pp,
        dp=dp,
        batch=batch,
        weight_bytes=weight_bytes_per_step(shape, dtype_bytes),
        mean_kv_bytes=kv_layer * positions,
        decode_flops_per_token=dec_flops,
        request_flops=images * per_image + prefill + mm.total,
        decode_steps=steps,
        output_tokens=output_tokens,
    )
    n = tp * pp
    bytes_per_request = steps * (pp * work.weight_bytes + batch * work.mean_kv_bytes) / batch
    flops_per_request = work.request_flops + steps * dec_flops
    overlap_s = max(
        bytes_per_request / (n * gpu.bandwidth_bytes_s), flops_per_request / (n * gpu.peak_flops)
    )
    return Roofline(
        device=gpu.name,
        bandwidth_gb_s=gpu.memory_bandwidth_gb_s,
        peak_tflops=gpu.bf16_dense_tflops,
        tp=tp,
        pp=pp,
        dp=dp,
        batch=batch,
        images=images,
        prompt_tokens=prompt,
        output_tokens=output_tokens,
        decode_steps=steps,
        vision=vision,
        vision_flops=per_image,
        prefill_flops=prefill,
        request_flops=work.request_flops,
        mm_prefix=mm,
        decoder_matrix_params=decoder_matrix_params(shape),
        kv_bytes_per_token=kv_layer * shape.num_layers,
        mean_context=prompt + (steps + 1) / 2 if steps else float(prompt),
        mean_kv_bytes=work.mean_kv_bytes,
        weight_bytes=work.weight_bytes,
        decode_flops_per_token=dec_flops,
        ceiling=efficiency_ceiling(work, bw_efficiency, mfu, gpu),
        hard_bound=efficiency_ceiling(work, 1.0, 1.0, gpu),
        overlap_req_s=dp / overlap_s,
    )


def format_roofline(r: Roofline) -> list[str]:
    """The report lines of `python -m serve plan`: inputs, efficiency, ceiling, bound."""
    c, hb = r.ceiling, r.hard_bound
    compute = "vision + prefill" if r.vision is not None else "prefill"
    devices = f"{r.tp * r.pp} x {r.device}" + (f", x {r.dp} replicas" if r.dp > 1 else "")
    lines = [
        f"roofline ({devices}): {r.bandwidth_gb_s:,.0f} GB/s and {r.peak_tflops:,.0f} dense "
        "bf16 TFLOP/s per GPU (serve/plan/gpus.yaml); formula in serve/plan/roofline.py",
    ]
    if r.vision is not None:
        v = r.vision
        lines.append(
            f"  vision encoder:  {r.vision_flops / 1e12:.2f} TFLOP per image ({v.layers} layers "
            f"x (linear {v.linear_per_layer / 1e9:.1f} + attention "
            f"{v.attention_per_layer / 1e9:.1f} GFLOP) on {v.patches:,} patches, patch "
            f"embedding {v.patch_embedding / 1e9:.1f}, projector {v.projector / 1e9:.1f} GFLOP)"
        )
    if r.mm_prefix.images:
        lines.append(format_mm_prefix(r.mm_prefix))
    lines += [
        f"  prefill:         {r.prefill_flops / 1e12:.2f} TFLOP per request ({r.prompt_tokens:,} "
        f"prompt tokens x 2 x {r.decoder_matrix_params / 1e9:.2f} B layer weights + causal "
        "attention + LM head for the first output token)",
        f"  decode reads:    {r.weight_bytes / 1e9:.2f} GB of weights per step (decoder layers "
        f"+ LM head, not the vision tower) + {r.mean_kv_bytes / 1e6:.1f} MB of KV per "
        f"sequence ({r.kv_bytes_per_token:,} B per token x mean context "
        f"{r.mean_context:,.0f}, sliding layers capped at their window)",
        f"  decode compute:  {r.decode_flops_per_token / 1e9:.2f} GFLOP per token; "
        f"{r.decode_steps:,} decode steps per request",
        f"  batch:           {r.batch} sequences decode together per replica "
        "(min of max_num_seqs and the KV concurrency above)",
        f"  efficiency:      {c.bw_efficiency:.0%} of memory bandwidth, {c.mfu:.0%} MFU "
        "(--bw-efficiency, --mfu)",
        f"  decode step:     {c.step_s * 1e3:.1f} ms at batch {r.batch} ({c.step_bound}-bound; "
        f"{hb.step_s * 1e3:.1f} ms at 100%)",
        f"  per request:     {c.compute_s * 1e3:.1f} ms {compute}, then "
        f"{c.decode_s * 1e3:.1f} ms of decode steps (its 1/{r.batch} share); they add",
        f"  per stream:      a token every {c.token_interval_s * 1e3:.1f} ms at the ceiling "
        f"({r.batch} x {(c.compute_s + c.decode_s) * 1e3:.1f} ms / {r.decode_steps:,} steps: "
        f"decode steps plus the new requests' {compute})",
        f"ceiling: {c.req_s:.1f} req/s, {c.tok_s:.0f} tok/s",
        f"hard bound: {hb.req_s:.1f} req/s, {hb.tok_s:.0f} tok/s (the same at 100% of bandwidth "
        f"and peak; if all compute overlapped all memory traffic: {r.overlap_req_s:.1f} req/s)",
    ]
    return lines


def format_mm_prefix(m: MmPrefixCost) -> str:
    """One report line: what the image mask adds to a prompt (serve.plan.mm_prefix)."""
    return (
        f"  image mask:      +{m.total / 1e9:,.1f} GFLOP per request: {m.extra_flops / 1e9:,.1f} "
        f"of bidirectional attention within its {m.images} image(s), and its prompt's "
        f"attention ({m.triton_attention_flops / 1e9:,.1f} GFLOP) in vLLM's Triton image-mask "
        f"kernel at {m.efficiency:.0%} of the MFU (ESTIMATE, --mm-attention-efficiency; "
        "serve/plan/mm_prefix.py)"
    )
