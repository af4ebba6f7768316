"""vLLM's CPU attention backend with Gemma 3's image mask (installed by serve.attention.plugin
in place of CPU_ATTN; imports vLLM, so only vLLM's processes import it).

Everything runs on vLLM's own CPU kernel (`ops.cpu_attention_with_kv_cache`), twice on a
step that computes image tokens: first as vLLM does (causal, with the layer's window, every
row), then once more for the image rows only, as one non-causal request per image whose
keys end at the image's last token (serve.attention.spans: that is Gemma 3's mask for those
rows). The second pass overwrites the image rows' output. Steps without image rows (every
decode step, text-only prompts) run exactly vLLM's backend. The keys come from the paged KV
cache, so a prefix-cache hit or an earlier prefill chunk before the image is seen as is.

On a CPU with AMX, vLLM runs its `amx` kernel for bfloat16 without asking Linux for the AMX
tile state; the builder asks (`require_isa`), so no process dies of SIGILL on its first
attention step.

Not exact, and so refused or reported:
- an image split across two steps: its first rows cannot see keys not computed yet. vLLM
  never splits an image when `disable_chunked_mm_input` is on (CUDA forces it for these
  models); the builder refuses to start without it (the launcher passes the flag);
- an image whose first tokens came from the prefix cache and whose rest vLLM's scheduler
  still cuts short when the step's token budget runs out (its rollback covers only images
  not yet started): logged as a warning when it happens. vLLM's GPU backends share it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from itertools import accumulate
from typing import Any, cast

import torch
from vllm import _custom_ops as ops
from vllm import envs
from vllm.logger import init_logger
from vllm.v1.attention.backend import AttentionType, CommonAttentionMetadata
from vllm.v1.attention.backends.cpu_attn import (
    CPUAttentionBackend,
    CPUAttentionBackendImpl,
    CPUAttentionMetadata,
    CPUAttentionMetadataBuilder,
)

from serve.attention.spans import ImageSpan, image_spans
from serve.attention.support import ACTIVE_LINE

logger = init_logger("vllm.plugins.medgemma_image_mask")

CHUNKED_IMAGES_REFUSED = (
    "medgemma-serve image mask: Gemma 3 attends both ways within an image, which cannot be "
    "exact when an image is split across prefill steps; start vLLM with "
    "--disable-chunked-mm-input (scheduler_config.disable_chunked_mm_input; vLLM forces it "
    "on CUDA for these models, and python -m serve passes it on the CPU)"
)
AMX_REFUSED = (
    "medgemma-serve image mask: vLLM's CPU attention chose its AMX kernel (a CPU with AMX, "
    "bfloat16), but Linux refused this process the AMX tile state "
    "(arch_prctl ARCH_REQ_XCOMP_PERM), so its first tile instruction would kill the process; "
    "serve in float32 (dtype) or on a host whose kernel grants AMX"
)
SPLIT_IMAGE_WARNING = (
    "medgemma-serve image mask: an image resumed from the prefix cache was split across "
    "steps by the token budget; its rows in this step do not see the image's later tokens "
    "(as on vLLM's GPU backends); raise max_num_batched_tokens to make this rarer"
)


@dataclass
class ImageRows:
    """The second pass of one step: the image rows and their per-image requests."""

    rows: torch.Tensor  # int64 indices of the image rows among the step's tokens
    query_start_loc: torch.Tensor  # int32, one entry per image + 1
    seq_lens: torch.Tensor  # int32 key length per image: its last position + 1
    block_table: torch.Tensor  # each image's request's block table row
    scheduler_metadata: torch.Tensor  # vLLM's work split for these requests, non-causal


@dataclass
class ImageMaskMetadata(CPUAttentionMetadata):
    """vLLM's CPU metadata plus the step's image rows (None: no image row in this step)."""

    image_rows: ImageRows | None = None


def require_isa(isa: str) -> None:
    """Make vLLM's CPU attention kernel for `isa` safe to run in this process.

    The "amx" kernel executes AMX tile instructions, which Linux lets a process run only
    after it asked for the tile state (arch_prctl ARCH_REQ_XCOMP_PERM, once per process);
    before that the first tile instruction kills the process with SIGILL. vLLM 0.32 picks
    "amx" from the CPU's flags alone (`_get_attn_isa`) and never asks: it works only because
    oneDNN asks the first time one of its kernels looks for AMX (a bfloat16 matmul, torch's
    SDPA), which in a server happens before the first attention. A process whose first AMX
    user is this kernel (a unit test) dies. So ask here; if Linux says no, refuse at start."""
    if isa == "amx" and not torch.cpu._init_amx():
        raise RuntimeError(AMX_REFUSED)


def image_rows_of(
    spans: list[ImageSpan],
    block_table: torch.Tensor,
    scheduler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> ImageRows:
    """The tensors of a step's second pass; `scheduler(query_start_loc, seq_lens)` builds
    the kernel's work split for them (`schedule`, non-causal)."""
    rows = torch.cat([torch.arange(s.first_row, s.first_row + s.rows) for s in spans])
    query_start_loc = torch.tensor([0, *accumulate(s.rows for s in spans)], dtype=torch.int32)
    seq_lens = torch.tensor([s.kv_len for s in spans], dtype=torch.int32)
    reqs = torch.tensor([s.req for s in spans], dtype=torch.int64)
    table = block_table.index_select(0, reqs)
    return ImageRows(rows, query_start_loc, seq_lens, table, scheduler(query_start_loc, seq_lens))


def schedule(
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    causal: bool,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    window: int,
    isa: str,
    kv_cache_dtype: str = "auto",
) -> torch.Tensor:
    """vLLM's CPU kernel work split for these requests (window -1: none)."""
    return ops.cpu_attn_get_scheduler_metadata(
        num_reqs=len(seq_lens),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        seq_lens=seq_lens,
        dtype=dtype,
        query_start_loc=query_start_loc,
        causal=causal,
        sliding_window_size=window,
        isa=isa,
        enable_kv_split=envs.VLLM_CPU_ATTN_SPLIT_KV,
        dynamic_causal=None,
        kv_cache_dtype=kv_cache_dtype,
    )


def attend_image_rows(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    output: torch.Tensor,
    image: ImageRows,
    *,
    scale: float,
    sliding_window: int,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
    kv_cache_dtype: str = "auto",
) -> None:
    """The second pass: overwrite `output`'s image rows ([tokens, heads, head_size]) with
    vLLM's kernel run non-causally over each image's keys (`kv_cache`: vLLM's CPU layout,
    [blocks, kv_heads, block_size, 2 x head_size], already holding this step's keys)."""
    num_blocks, num_kv_heads, block_size, _ = kv_cache.size()
    kv = kv_cache.view((num_blocks, num_kv_heads, block_size * 2, -1))
    key_cache, value_cache = kv.chunk(2, dim=2)
    q = query.index_select(0, image.rows)
    out = torch.empty(q.shape, dtype=output.dtype)
    ops.cpu_attention_with_kv_cache(
        query=q,
        key_cache=key_cache,
        value_cache=value_cache,
        output=out,
        query_start_loc=image.query_start_loc,
        seq_lens=image.seq_lens,
        scale=scale,
        causal=False,
        alibi_slopes=alibi_slopes,
        sliding_window=sliding_window,
        block_table=image.block_table,
        softcap=softcap,
        scheduler_metadata=image.scheduler_metadata,
        s_aux=sinks,
        dynamic_causal=None,
        k_scale=k_scale,
        v_scale=v_scale,
        kv_cache_dtype=kv_cache_dtype,
    )
    output.index_copy_(0, image.rows, out.view(q.shape[0], *output.shape[1:]))


class ImageMaskMetadataBuilder(CPUAttentionMetadataBuilder):
    """vLLM's CPU metadata builder; on a step with image rows it also lays out their pass."""

    def __init__(self, kv_cache_spec: Any, layer_names: list[str], vllm_config: Any, device: Any):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        require_isa(self.isa)  # every layer of the group runs the kernel for self.isa
        model_config = vllm_config.model_config
        self.image_mask = bool(
            model_config is not None
            and model_config.is_mm_prefix_lm
            and not self.is_cross_attention
            and not self.is_encoder_only_attention
        )
        if self.image_mask and not vllm_config.scheduler_config.disable_chunked_mm_input:
            raise ValueError(CHUNKED_IMAGES_REFUSED)
        if self.image_mask:  # said here: vLLM's logging is set up by now, not at plugin load
            logger.info_once(ACTIVE_LINE)

    def build(
        self,
        common_prefix_len: int,
        common_attn_metadata: CommonAttentionMetadata,
        fast_build: bool = False,
    ) -> ImageMaskMetadata:
        base = super().build(common_prefix_len, common_attn_metadata, fast_build)
        cm = common_attn_metadata
        image_rows = None
        if self.image_mask and cm.mm_req_doc_ranges and cm.causal is True:
            image_rows = self._image_rows(cm)
        values = {f.name: getattr(base, f.name) for f in fields(base)}
        return ImageMaskMetadata(**values, image_rows=image_rows)

    def _image_rows(self, cm: CommonAttentionMetadata) -> ImageRows | None:
        assert cm.mm_req_doc_ranges is not None
        spans = image_spans(
            cm.mm_req_doc_ranges, cm.query_start_loc_cpu.tolist(), cm.seq_lens.cpu().tolist()
        )
        if not spans:
            return None
        if not all(s.complete for s in spans):
            logger.warning_once(SPLIT_IMAGE_WARNING)

        def scheduler(query_start_loc: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
            return schedule(
                query_start_loc,
                seq_lens,
                causal=False,
                num_heads=self.num_heads,
                num_kv_heads=self.num_kv_heads,
                head_dim=self.head_dim,
                dtype=cast(torch.dtype, self.dtype),  # resolved by vLLM's ModelConfig
                window=self.window_size,
                isa=self.isa,
                kv_cache_dtype=self.kv_cache_dtype,
            )

        return image_rows_of(spans, cm.block_table_tensor, scheduler)


class ImageMaskAttentionImpl(CPUAttentionBackendImpl):
    """vLLM's CPU attention, then the image rows again with Gemma 3's mask."""

    def forward(  # type: ignore[override]
        self,
        layer: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: CPUAttentionMetadata | None,
        output: torch.Tensor,
        output_scale: torch.Tensor | None = None,
        output_block_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        super().forward(
            layer, query, key, value, kv_cache, attn_metadata, output, output_scale,
            output_block_scale,
        )  # fmt: skip
        image = getattr(attn_metadata, "image_rows", None)
        if image is None or self.attn_type != AttentionType.DECODER:
            return output
        attend_image_rows(
            query,
            kv_cache,
            output,
            image,
            scale=self.scale,
            sliding_window=self.sliding_window,
            softcap=self.logits_soft_cap,
            alibi_slopes=self.alibi_slopes,  # type: ignore[arg-type]
            sinks=self.sinks,
            k_scale=layer._k_scale_float,
            v_scale=layer._v_scale_float,
            kv_cache_dtype=self.kv_cache_dtype,
        )
        return output


class ImageMaskAttentionBackend(CPUAttentionBackend):
    """CPU_ATTN with `supports_mm_prefix()`: Gemma 3's bidirectional image attention."""

    @classmethod
    def supports_mm_prefix(cls) -> bool:
        return True

    @staticmethod
    def get_impl_cls() -> type[ImageMaskAttentionImpl]:  # type: ignore[override]
        return ImageMaskAttentionImpl

    @staticmethod
    def get_builder_cls() -> type[ImageMaskMetadataBuilder]:  # type: ignore[override]
        return ImageMaskMetadataBuilder
