"""Concurrent studies per replica for mixes of radiographs and CT studies (pure).

A radiograph study is one image; a CT study is `slices` images, each followed by a
"SLICE n" label (clients.study lays a series out so, as Google's CT notebook does). Both
carry the same prompt text and answer. For a mix with a CT share p, a study holds on
average `(1 - p) x blocks(radiograph) + p x blocks(CT)` KV blocks, so the KV cache holds
`num_blocks / mean` studies at once; the scheduler runs at most `max_num_seqs`. A CT study
above `max_model_len` or the image limit is refused by vLLM, which binds before either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_CT_SLICES = 32
DEFAULT_CT_SHARES = (0.0, 0.2, 0.5, 1.0)
SLICE_LABEL_TOKENS = 4  # "SLICE n" after each image: ESTIMATE (word, space, number, newline)


@dataclass(frozen=True)
class StudyCost:
    """One kind of study: its images, its tokens, the KV blocks and bytes it holds."""

    images: int
    tokens: int
    blocks: int
    kv_bytes: int


@dataclass(frozen=True)
class MixRow:
    """One row of the studies table: a CT share and what one replica holds of that mix."""

    ct_share: float
    mean_tokens: float
    mean_kv_bytes: float
    kv_studies: float  # studies of this mix the KV cache holds at once
    concurrent: int  # studies that run at once (0: the mix is refused)
    bound: str  # what limits `concurrent`

    @property
    def name(self) -> str:
        return mix_name(self.ct_share)


def mix_name(ct_share: float) -> str:
    if ct_share == 0:
        return "100% radiograph"
    if ct_share == 1:
        return "100% CT"
    return f"{1 - ct_share:.0%} radiograph / {ct_share:.0%} CT"


def ct_refusal(ct: StudyCost, max_model_len: int, image_limit: int) -> str | None:
    """Why vLLM refuses a CT study (None: it does not)."""
    if ct.images > image_limit:
        return f"limit_mm_per_prompt image {image_limit} < {ct.images} slices: refused"
    if ct.tokens > max_model_len:
        return f"max_model_len {max_model_len:,} < {ct.tokens:,} tokens: refused"
    return None


def mix_rows(
    ct_shares: Sequence[float],
    radiograph: StudyCost,
    ct: StudyCost,
    *,
    num_blocks: int,
    max_num_seqs: int,
    max_model_len: int,
    image_limit: int,
) -> list[MixRow]:
    """The studies table, one row per CT share (0..1; the rest are radiographs)."""
    refused = ct_refusal(ct, max_model_len, image_limit)
    rows = []
    for p in ct_shares:
        if not 0 <= p <= 1:
            raise ValueError(f"a CT share must be in [0, 1], got {p}")
        mean_blocks = (1 - p) * radiograph.blocks + p * ct.blocks
        kv = num_blocks / mean_blocks
        if p > 0 and refused:
            concurrent, bound = 0, refused
        elif kv < max_num_seqs:
            concurrent, bound = int(kv), "KV cache"
        else:
            concurrent, bound = max_num_seqs, "max_num_seqs"
        rows.append(
            MixRow(
                ct_share=p,
                mean_tokens=(1 - p) * radiograph.tokens + p * ct.tokens,
                mean_kv_bytes=(1 - p) * radiograph.kv_bytes + p * ct.kv_bytes,
                kv_studies=kv,
                concurrent=concurrent,
                bound=bound,
            )
        )
    return rows


def parse_shares(text: str) -> list[float]:
    """`0,0.2,0.5,1` -> [0.0, 0.2, 0.5, 1.0]. Raises ValueError naming the bad entry."""
    shares = []
    for item in text.split(","):
        try:
            share = float(item)
        except ValueError:
            raise ValueError(f"not a number: {item.strip()!r}") from None
        if not 0 <= share <= 1:
            raise ValueError(f"a CT share must be in [0, 1], got {item.strip()}")
        shares.append(share)
    return shares
