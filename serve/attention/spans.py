"""Which query rows of a step attend both ways, and over which keys (pure).

Gemma 3's mask (transformers' `token_type_ids_mask_function`, vLLM's FlexAttention
`prefix_lm_mask_mod` and Triton `compute_mm_prefix_range_tensor`): the token at position q
may see the key at position k when

    (k <= q and q - k < window) or (q and k lie in the same image)

(window: the layer's sliding window; none on a global layer). Text rows are plain causal
(with window), which vLLM's kernel computes already. For a row q of image [s, e] the allowed
keys are exactly [q - window + 1, e] (or [0, e] on a global layer) as long as the image is
no longer than the window; vLLM's model runner keeps an image range only then
(`gpu_model_runner._build_attention_metadata`: a range longer than the text config's
sliding_window is dropped unless the model clamps it in the kernel). And [q - window + 1, e]
is what vLLM's own CPU kernel computes for a non-causal request of length e + 1 whose query
rows are the image's rows: its non-causal window is |q - k| < window, and e - q < window.

So each image of a step becomes one `ImageSpan`: a contiguous run of query rows and a key
length, which the backend (serve.attention.backend) hands to the kernel a second time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageSpan:
    """The rows of one image scheduled in this step."""

    req: int  # the request's row in the step (its query_start_loc and block table index)
    first_row: int  # the first of the span's query rows, in the step's token order
    rows: int  # how many query rows (image tokens computed in this step)
    kv_len: int  # the keys the rows may see lie in [0, kv_len): the image's end + 1
    complete: bool  # False: the image's last tokens come in a later step (not exact)


def image_spans(
    ranges: Mapping[int, Sequence[tuple[int, int]]],
    query_start_loc: Sequence[int],
    seq_lens: Sequence[int],
) -> list[ImageSpan]:
    """The image spans of one step (pure). `ranges`: vLLM's `mm_req_doc_ranges`, request
    row -> inclusive (first, last) token positions of each image; `query_start_loc`: where
    each request's query rows start in the step (num_reqs + 1 entries); `seq_lens`: each
    request's length once this step is computed (its first query row is at position
    seq_len - query_len: a prefix-cache hit or an earlier chunk precedes it)."""
    spans = []
    for req in sorted(ranges):
        if req + 1 >= len(query_start_loc):
            continue  # a request not in this step (padding)
        start, query_len = query_start_loc[req], query_start_loc[req + 1] - query_start_loc[req]
        if query_len <= 0:
            continue
        seq_len = seq_lens[req]
        context = seq_len - query_len  # positions computed before this step
        for first_pos, last_pos in ranges[req]:
            if first_pos >= last_pos:
                continue  # one token: causal is already bidirectional
            first, last = max(first_pos, context), min(last_pos, seq_len - 1)
            if first > last:
                continue  # the image lies wholly before or after this step's rows
            spans.append(
                ImageSpan(
                    req=req,
                    first_row=start + first - context,
                    rows=last - first + 1,
                    kv_len=min(last_pos + 1, seq_len),
                    complete=last_pos < seq_len,
                )
            )
    return spans
