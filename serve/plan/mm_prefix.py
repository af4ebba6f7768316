"""What Gemma 3's bidirectional attention within an image costs on vLLM 0.32's GPUs (pure).

Gemma 3 lets the 256 tokens of one image attend to each other both ways (a "multimodal
prefix LM"); text stays causal. What vLLM 0.32.0 does about it (paths under `vllm/` of
the installed package, line numbers of 0.32.0):

- `transformers_utils/model_arch_config_convertor.py:379`: "gemma3" is in
  MM_PREFIX_LM_MODELS, so `model_config.is_mm_prefix_lm` is true for every MedGemma that
  sees (and false for the text-only 27B).
- `platforms/cuda.py:333-343`: on CUDA vLLM forces `disable_chunked_mm_input`: the
  scheduler never splits one image's tokens over two steps. Chunked prefill still splits a
  volume between images, so a step of `max_num_batched_tokens` holds whole images only.
- `platforms/cuda.py:168-172`: on compute capability 9 (H100, H200) the first backend is
  TRITON_FLASH_ATTN (`v1/attention/backends/triton_flash_attn.py`), a composite that sends
  every step in which a prefill chunk holds image tokens to Triton's unified attention (it
  has the image mask) and the other steps to FlashAttention 3
  (`v1/attention/backends/composite.py:23-50`, `requires_mm_prefix`; `:87-111`).
- `v1/attention/backends/flash_attn.py:443-444, 495-508`: FlashAttention takes the image
  mask only as version 4, which an L4 (SM 8.9) does not run; FlashInfer has none
  (`v1/attention/backend.py:175, 307`). On an L4 vLLM selects TRITON_ATTN for every step.
- `v1/attention/backends/composite.py:103-111`: Gemma 3's sliding layers do not clamp the
  image range to their window (no `mm_prefix_clamp_sliding_window`), so the composite
  reports AttentionCGSupport.NEVER: on H100/H200 no full CUDA graphs, attention runs
  between piecewise graphs (launch overhead per decode step: not modelled here).
- `v1/worker/gpu_model_runner.py:2337-2380`: an image range longer than the sliding
  window is dropped; a 256-token image is shorter than 1,024, so every layer attends within
  it both ways.
- Prefix caching is not affected: nothing under `v1/core/` (block hashing, the scheduler's
  cache hits) refers to it; a cached image's KV is reused as it is.
- On the CPU (`platforms/cpu.py:177-179`) vLLM returns CPU_ATTN whatever `use_mm_prefix`
  says, and CPU_ATTN attends causally within an image; this project's plugin replaces it
  with a backend that adds Gemma 3's mask (serve/attention; not modelled here).

The planner's model of the cost, for a prompt with images, on a GPU:
1. More attention: causally, image token j (0-based) sees j + 1 of its image's T tokens;
   both ways it sees all T: T (T - 1) / 2 more query-key pairs per image and layer (only
   global layers if T exceeded the window), 4 x heads x head_dim FLOPs each.
2. A slower kernel: the prompt's attention (causal + the extra) runs in Triton's kernel
   instead of FlashAttention's, at MM_PREFIX_ATTENTION_EFFICIENCY of the MFU the rest
   reaches; the difference is counted as FLOPs at that MFU. A follow-up question without
   images goes to FlashAttention on H100/H200 (its new tokens hold no image) and is not
   charged; on an L4 it is Triton too, but its attention is a few GFLOP.
"""

from __future__ import annotations

from dataclasses import dataclass

from serve.model.shapes import ModelShape

# ESTIMATE, not measured (no GPU here): Triton's unified attention kernel over a prefill
# reaches this share of FlashAttention 3's throughput. Change it with --mm-attention-efficiency.
MM_PREFIX_ATTENTION_EFFICIENCY = 0.5


@dataclass(frozen=True)
class MmPrefixCost:
    """The image-mask cost of one prompt's prefill, in FLOPs at the planner's MFU."""

    images: int
    extra_pairs: int  # query-key pairs added by bidirectional image attention, all layers
    extra_flops: int
    triton_attention_flops: int  # the prompt's attention, run in the Triton kernel
    efficiency: float
    slow_kernel_flops: int  # triton_attention_flops x (1 / efficiency - 1)

    @property
    def total(self) -> int:
        return self.extra_flops + self.slow_kernel_flops


NO_COST = MmPrefixCost(0, 0, 0, 0, 1.0, 0)


def bidirectional_extra_pairs(shape: ModelShape, images: int) -> int:
    """Query-key pairs bidirectional attention adds to `images` images, over all layers."""
    t = shape.mm_tokens_per_image
    window = shape.sliding_window
    layers = shape.num_layers if window is None or t <= window else shape.num_full_layers
    return images * layers * t * (t - 1) // 2


def mm_prefix_cost(
    shape: ModelShape,
    images: int,
    causal_attention_flops: int,
    efficiency: float = MM_PREFIX_ATTENTION_EFFICIENCY,
) -> MmPrefixCost:
    """The image-mask cost of a prompt with `images` images whose causal attention is
    `causal_attention_flops` (see the module docstring). No images: no cost."""
    if not images or shape.vision is None:
        return NO_COST
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
    pairs = bidirectional_extra_pairs(shape, images)
    extra = 4 * shape.num_heads * shape.head_dim * pairs
    triton = causal_attention_flops + extra
    return MmPrefixCost(
        images=images,
        extra_pairs=pairs,
        extra_flops=extra,
        triton_attention_flops=triton,
        efficiency=efficiency,
        slow_kernel_flops=round(triton * (1 / efficiency - 1)),
    )
