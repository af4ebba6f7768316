"""Capacity arithmetic for a deployment config (pure): weights, KV cache, concurrency.

The KV numbers reproduce vLLM 0.32's own arithmetic (vllm/v1/core/kv_cache_utils.py):
Gemma 3's sliding-window and global layers land in separate KV cache groups of
`min(#global, #sliding)` layers each; one block holds `block_size` tokens of every layer
of a group, and the block pool is shared, so `num_blocks = budget // (layers_per_group *
page_bytes)`. A request needs `cdiv(tokens, block_size)` blocks in each global group and
`cdiv(min(window - 1 + in_flight, tokens), block_size) + 1` in each sliding group, where
`in_flight` is the tokens of the batches not yet settled (`max_num_batched_tokens` times
the concurrent batches). vLLM's start-up line "KV cache size: N tokens, Maximum
concurrency for L tokens per request: Cx" is C = num_blocks / blocks(L), N = int(C * L).

On a GPU the KV budget is `gpu_memory_utilization x memory - weights - overhead`, where
the overhead (activations of one max_num_batched_tokens step, sampler logits, CUDA
context, NCCL and CUDA graphs) is an ESTIMATE: vLLM measures it by profiling at start-up.
On the CPU the budget is exactly `cpu_kvcache_space_gib` (VLLM_CPU_KVCACHE_SPACE).
"""

from __future__ import annotations

from dataclasses import dataclass

from serve.config.deployment import DeploymentConfig
from serve.model.shapes import DTYPE_BYTES, ModelShape

GiB = 1024**3
VLLM_DEFAULT_GPU_UTILIZATION = 0.92  # vllm.config.cache.CacheConfig.gpu_memory_utilization
VLLM_DEFAULT_CPU_KV_GIB = 4  # VLLM_CPU_KVCACHE_SPACE when unset
BLOCK_SIZE = {"cpu": 128, "cuda": 16}  # vLLM's default tokens per KV block per platform
IMAGE_WRAPPER_TOKENS = 4  # "\n\n<start_of_image>" ... "<end_of_image>\n\n" around the 256
NON_TORCH_BYTES = int(0.75 * GiB)  # CUDA context + allocator slack (estimate)
NCCL_BYTES = int(0.5 * GiB)  # NCCL / custom all-reduce buffers when TP or PP > 1 (estimate)
CUDA_GRAPH_BYTES = int(0.5 * GiB)  # captured CUDA graphs unless enforce_eager (estimate)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Params:
    """Parameter counts of a Gemma 3 model."""

    embedding: int
    per_layer: int
    layers: int
    vision: int
    projector: int

    @property
    def total(self) -> int:
        return self.embedding + self.per_layer * self.layers + self.vision + self.projector


def param_counts(shape: ModelShape) -> Params:
    """Gemma 3 text decoder (tied embeddings) + SigLIP vision tower + projector."""
    h, hd = shape.hidden_size, shape.head_dim
    attn = h * shape.num_heads * hd * 2 + h * shape.num_kv_heads * hd * 2  # q, o, k, v
    mlp = 3 * h * shape.intermediate_size  # gate, up, down
    norms = 4 * h + 2 * hd  # 4 RMSNorms per layer + q_norm, k_norm
    vision = projector = 0
    if shape.vision is not None:
        v = shape.vision
        vl = 4 * (v.hidden_size**2 + v.hidden_size)  # q, k, v, out with biases
        vl += 2 * v.hidden_size * v.intermediate_size + v.intermediate_size + v.hidden_size
        vl += 4 * v.hidden_size  # two LayerNorms
        patches = (v.image_size // v.patch_size) ** 2
        embed = v.num_channels * v.patch_size**2 * v.hidden_size + v.hidden_size
        vision = v.num_layers * vl + embed + patches * v.hidden_size + 2 * v.hidden_size
        projector = v.hidden_size * h + v.hidden_size
    lm_head = 0 if shape.tie_word_embeddings else shape.vocab_size * h
    return Params(
        embedding=shape.vocab_size * h + lm_head + h,  # + final norm
        per_layer=attn + mlp + norms,
        layers=shape.num_layers,
        vision=vision,
        projector=projector,
    )


def weight_bytes_per_device(shape: ModelShape, tp: int, pp: int, dtype_bytes: int) -> int:
    """Weights on the busiest device: the first pipeline stage (embedding, vision tower,
    its share of layers), every matrix split over the tensor-parallel ranks."""
    p = param_counts(shape)
    stage = p.embedding + p.vision + p.projector + cdiv(p.layers, pp) * p.per_layer
    return cdiv(stage, tp) * dtype_bytes


def lora_bytes_per_adapter(shape: ModelShape, rank: int, tp: int, pp: int, dtype_bytes: int) -> int:
    """One LoRA slot on the busiest device: A (rank x in) and B (out x rank) of q, k, v, o,
    gate, up and down in each decoder layer of a pipeline stage, at `rank`. Column-parallel
    modules (q, k, v, gate, up) split B's outputs over the tensor-parallel ranks, row-parallel
    ones (o, down) A's inputs; the other matrix is whole on every rank."""
    h, hd, inter = shape.hidden_size, shape.head_dim, shape.intermediate_size
    q, kv = shape.num_heads * hd, shape.num_kv_heads * hd
    column = [(h, q), (h, kv), (h, kv), (h, inter), (h, inter)]  # (in, out)
    row = [(q, h), (inter, h)]
    per_layer = sum(rank * (i + cdiv(o, tp)) for i, o in column)
    per_layer += sum(rank * (cdiv(i, tp) + o) for i, o in row)
    return per_layer * cdiv(shape.num_layers, pp) * dtype_bytes


def lora_slot_bytes(
    shape: ModelShape, max_loras: int, max_rank: int, tp: int, pp: int, dtype_bytes: int
) -> int:
    """What vLLM preallocates on each device for LoRA: `max_loras` slots, each at
    `max_rank` whatever the rank of the adapters loaded into it."""
    return max_loras * lora_bytes_per_adapter(shape, max_rank, tp, pp, dtype_bytes)


def kv_heads_per_rank(shape: ModelShape, tp: int) -> int:
    """vLLM splits KV heads over TP ranks, replicating them when TP exceeds them."""
    return max(1, shape.num_kv_heads // tp)


def kv_bytes_per_token_per_layer(shape: ModelShape, tp: int, dtype_bytes: int) -> int:
    """K and V of one token in one layer on one tensor-parallel rank."""
    return 2 * kv_heads_per_rank(shape, tp) * shape.head_dim * dtype_bytes


@dataclass(frozen=True)
class KvGroups:
    """vLLM's hybrid KV cache grouping of a model's layers."""

    layers_per_group: int
    full_groups: int
    sliding_groups: int


def kv_groups(shape: ModelShape) -> KvGroups:
    """As vLLM's `_get_kv_cache_groups_uniform_page_size` (one group if all layers agree)."""
    n_full, n_sliding = shape.num_full_layers, shape.num_sliding_layers
    if n_full == 0 or n_sliding == 0:
        return KvGroups(shape.num_layers, int(n_full > 0), int(n_sliding > 0))
    size = min(n_full, n_sliding)
    if max(n_full, n_sliding) < size * 1.5:
        size = max(n_full, n_sliding)
    return KvGroups(size, cdiv(n_full, size), cdiv(n_sliding, size))


def resolved_max_num_batched_tokens(cfg: DeploymentConfig, device_memory_bytes: int) -> int:
    """vLLM's default when the config leaves it unset (EngineArgs defaults, API server)."""
    if cfg.max_num_batched_tokens is not None:
        return cfg.max_num_batched_tokens
    if cfg.device == "cpu":
        return 2048 * cfg.tensor_parallel_size * cfg.pipeline_parallel_size
    return 8192 if device_memory_bytes >= 70 * GiB else 2048


def in_flight_tokens(cfg: DeploymentConfig, max_num_batched_tokens: int) -> int:
    """Tokens of batches scheduled but not settled: async scheduling (GPU, no PP) keeps
    two batches in flight, pipeline parallelism one per stage, the CPU one."""
    pp = cfg.pipeline_parallel_size
    batches = 2 if cfg.device == "cuda" and pp == 1 else pp
    return batches * max_num_batched_tokens


def blocks_per_request(
    shape: ModelShape, groups: KvGroups, tokens: int, block_size: int, in_flight: int
) -> int:
    """Blocks one request of `tokens` tokens holds across all KV cache groups."""
    full = groups.full_groups * cdiv(tokens, block_size)
    sliding = 0
    if groups.sliding_groups:
        window = int(shape.sliding_window or tokens)
        held = min(window - 1 + in_flight, tokens)
        sliding = groups.sliding_groups * (cdiv(held, block_size) + 1)
    return full + sliding


def activation_bytes(
    shape: ModelShape, tp: int, max_num_batched_tokens: int, max_num_seqs: int, dtype_bytes: int
) -> int:
    """Peak activations of one scheduler step (ESTIMATE): the widest per-token tensors of
    a layer (qkv, gate+up, residual) twice over for temporaries, plus fp32 logits."""
    h, hd = shape.hidden_size, shape.head_dim
    qkv = (shape.num_heads + 2 * shape.num_kv_heads) * hd // tp
    per_token = 2 * h + qkv + 2 * shape.intermediate_size // tp
    logits = max_num_seqs * cdiv(shape.vocab_size, tp) * 4
    return 2 * max_num_batched_tokens * per_token * dtype_bytes + logits


def dtype_bytes(cfg: DeploymentConfig) -> int:
    return DTYPE_BYTES[cfg.dtype]


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def parallel_problems(
    tp: int, pp: int, shape: ModelShape, tp_field: str = "tensor_parallel_size"
) -> list[str]:
    """Why vLLM cannot split `shape` this way (empty if it can); each names the field."""
    problems = []
    if shape.num_heads % tp:
        problems.append(
            f"{tp_field}: {tp} does not divide the {shape.num_heads} attention heads of "
            f"{shape.name} (use one of {divisors(shape.num_heads)})"
        )
    if shape.num_kv_heads % tp and tp % shape.num_kv_heads:
        problems.append(
            f"{tp_field}: {tp} neither divides nor is a multiple of the "
            f"{shape.num_kv_heads} KV heads of {shape.name}"
        )
    if shape.vision is not None and shape.vision.num_heads % tp:
        problems.append(
            f"{tp_field}: {tp} does not divide the {shape.vision.num_heads} heads of "
            f"{shape.name}'s vision tower"
        )
    if shape.num_layers % pp:
        problems.append(
            f"pipeline_parallel_size: {pp} does not divide the {shape.num_layers} layers of "
            f"{shape.name} into equal stages (use one of {divisors(shape.num_layers)})"
        )
    return problems
