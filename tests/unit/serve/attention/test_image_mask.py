"""Gemma 3's image mask on vLLM's CPU kernel (serve.attention.backend) against torch SDPA with
an explicit mask: the kernel's causal pass then the image rows' second pass, as the backend
runs them in one layer, over a paged KV cache in vLLM's CPU layout.

Each case is one step: requests with positions computed before the step (an earlier chunk or
a prefix-cache hit), the step's query rows and the image ranges. The reference mask is
Gemma 3's (transformers' sliding window OR same image): key k is allowed for query q when
(k <= q and q - k < window) or q and k lie in the same image.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm._custom_ops")

from vllm.platforms import current_platform  # noqa: E402

if not current_platform.is_cpu():  # pragma: no cover - a CUDA build of vLLM
    pytest.skip("vLLM's CPU kernel is not in this build", allow_module_level=True)

from vllm import _custom_ops as ops  # noqa: E402
from vllm.v1.attention.backends.cpu_attn import _get_attn_isa  # noqa: E402

from serve.attention.backend import attend_image_rows, image_rows_of, schedule  # noqa: E402
from serve.attention.spans import image_spans  # noqa: E402

HEADS, KV_HEADS, HEAD = 4, 2, 32
BLOCK = 32
SCALE = HEAD**-0.5


@dataclass(frozen=True)
class Request:
    length: int  # tokens once the step is computed
    computed: int  # tokens computed before the step (prefix-cache hit or earlier chunk)
    images: tuple[tuple[int, int], ...]  # inclusive positions


CASES = {
    "image at the start": ([Request(40, 0, ((0, 15),))], -1),
    "image in the middle": ([Request(48, 0, ((10, 25),))], -1),
    "image at the end": ([Request(48, 0, ((30, 47),))], -1),
    "two images": ([Request(45, 0, ((5, 14), (20, 35)))], -1),
    "chunked prefill: text chunk before": ([Request(60, 20, ((24, 40),))], -1),
    "prefix-cache hit inside the image": ([Request(60, 32, ((20, 45),))], -1),
    "sliding window": ([Request(70, 0, ((20, 31),))], 16),
    "sliding window, chunk before": ([Request(70, 24, ((40, 51),))], 16),
    "sliding window, prefix-cache hit inside the image": ([Request(64, 32, ((24, 37),))], 16),
    "a batch: decode, image, text, two images": (
        [
            Request(31, 30, ((3, 12),)),
            Request(50, 0, ((17, 33),)),
            Request(20, 0, ()),
            Request(90, 0, ((2, 20), (40, 71))),
        ],
        -1,
    ),
}


def allowed(length: int, images: tuple[tuple[int, int], ...], window: int) -> torch.Tensor:
    """Gemma 3's mask over all positions of one request: [query, key] booleans."""
    q = torch.arange(length)[:, None]
    k = torch.arange(length)[None, :]
    mask = k <= q
    if window != -1:
        mask &= q - k < window
    for first, last in images:
        mask |= (q >= first) & (q <= last) & (k >= first) & (k <= last)
    return mask


def run_step(
    requests: list[Request], window: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reference, causal pass only, causal + image pass, image-row mask) for one step."""
    gen = torch.Generator().manual_seed(0)
    isa = _get_attn_isa(dtype, BLOCK, HEAD)
    blocks_per_req = [-(-r.length // BLOCK) for r in requests]
    num_blocks = sum(blocks_per_req) + 3
    # Blocks handed out in a shuffled order, as a block table does after some traffic.
    order = torch.randperm(num_blocks, generator=gen).tolist()
    table = torch.zeros(len(requests), max(blocks_per_req), dtype=torch.int32)
    kv_cache = torch.zeros(num_blocks, KV_HEADS, BLOCK, 2 * HEAD, dtype=dtype)
    view = kv_cache.view(num_blocks, KV_HEADS, BLOCK * 2, HEAD)
    key_cache, value_cache = view.chunk(2, dim=2)
    queries, keys, values = [], [], []
    for i, r in enumerate(requests):
        for j in range(blocks_per_req[i]):
            table[i, j] = order.pop()
        q = torch.randn(r.length, HEADS, HEAD, generator=gen).to(dtype)
        k = torch.randn(r.length, KV_HEADS, HEAD, generator=gen).to(dtype)
        v = torch.randn(r.length, KV_HEADS, HEAD, generator=gen).to(dtype)
        pos = torch.arange(r.length)
        slots = (table[i, pos // BLOCK].long() * BLOCK + pos % BLOCK).contiguous()
        ops.cpu_attn_reshape_and_cache(k, v, key_cache, value_cache, slots, isa)
        queries.append(q[r.computed :])
        keys.append(k)
        values.append(v)
    query = torch.cat(queries)
    seq_lens = torch.tensor([r.length for r in requests], dtype=torch.int32)
    qlens = [r.length - r.computed for r in requests]
    qsl = torch.tensor([0, *torch.tensor(qlens).cumsum(0).tolist()], dtype=torch.int32)
    kernel = dict(num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD, dtype=dtype, isa=isa)
    # As the builder does: both work splits first, then the layer's two kernel calls.
    causal_split = schedule(qsl, seq_lens, causal=True, window=window, **kernel)
    ranges = {i: list(r.images) for i, r in enumerate(requests)}
    spans = image_spans(ranges, qsl.tolist(), seq_lens.tolist())
    image = image_rows_of(
        spans,
        table,
        lambda loc, lens: schedule(loc, lens, causal=False, window=window, **kernel),
    )
    output = torch.empty_like(query)
    ops.cpu_attention_with_kv_cache(
        query, key_cache, value_cache, output, qsl, seq_lens, SCALE, True, None, window,
        table, 0.0, causal_split, None, None,
    )  # fmt: skip
    causal = output.clone()
    attend_image_rows(query, kv_cache, output, image, scale=SCALE, sliding_window=window)

    reference, image_row = [], torch.zeros(len(query), dtype=torch.bool)
    image_row[image.rows] = True
    for r, q, k, v in zip(requests, queries, keys, values, strict=True):
        mask = allowed(r.length, r.images, window)[r.computed :]
        k_full = k.float().repeat_interleave(HEADS // KV_HEADS, dim=1).transpose(0, 1)
        v_full = v.float().repeat_interleave(HEADS // KV_HEADS, dim=1).transpose(0, 1)
        ref = torch.nn.functional.scaled_dot_product_attention(
            q.float().transpose(0, 1), k_full, v_full, attn_mask=mask, scale=SCALE
        )
        reference.append(ref.transpose(0, 1))
    return torch.cat(reference), causal.float(), output.float(), image_row


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_the_kernel_with_the_image_pass_equals_sdpa_with_gemma3s_mask(
    case: str, dtype: torch.dtype
) -> None:
    requests, window = CASES[case]
    reference, causal, masked, image_row = run_step(requests, window, dtype)
    atol = 1e-5 if dtype == torch.float32 else 3e-2
    err = (masked - reference).abs().max().item()
    assert err < atol, f"{case}: max |error| {err:.3g} against SDPA with Gemma 3's mask"
    # The causal pass alone is what vLLM's backend computes: it is wrong on the image rows
    # (so the case exercises the mask) and right on every other row.
    causal_err = (causal[image_row] - reference[image_row]).abs().max().item()
    assert causal_err > 10 * atol, f"{case}: the causal pass already matches ({causal_err:.3g})"
    text_err = (causal[~image_row] - reference[~image_row]).abs().max().item()
    assert text_err < atol, f"{case}: text rows differ from the causal kernel ({text_err:.3g})"
