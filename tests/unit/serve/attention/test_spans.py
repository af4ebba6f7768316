"""Which rows of a step attend both ways (serve.attention.spans), on step layouts that vLLM's
scheduler produces: a whole prompt, a chunk after an earlier one, a prefix-cache hit that
ends inside an image, a decode row, and an image not yet finished."""

from __future__ import annotations

from serve.attention.spans import ImageSpan, image_spans


def test_a_whole_prompt_in_one_step() -> None:
    # 40 tokens, image at positions 5..20: rows 5..20 of the step, keys up to 20.
    assert image_spans({0: [(5, 20)]}, [0, 40], [40]) == [ImageSpan(0, 5, 16, 21, True)]


def test_two_requests_and_two_images() -> None:
    # Request 1's rows start at row 40 of the step.
    spans = image_spans({0: [], 1: [(3, 8), (12, 30)]}, [0, 40, 75], [40, 35])
    assert spans == [ImageSpan(1, 43, 6, 9, True), ImageSpan(1, 52, 19, 31, True)]


def test_a_chunk_after_an_earlier_one() -> None:
    # 20 tokens computed before; this step computes positions 20..59, image 24..40.
    assert image_spans({0: [(24, 40)]}, [0, 40], [60]) == [ImageSpan(0, 4, 17, 41, True)]


def test_a_prefix_cache_hit_inside_the_image() -> None:
    # Positions 0..31 came from the prefix cache; the image 20..45 goes on at row 0.
    assert image_spans({0: [(20, 45)]}, [0, 28], [60]) == [ImageSpan(0, 0, 14, 46, True)]


def test_an_image_not_finished_in_this_step_is_marked() -> None:
    assert image_spans({0: [(20, 45)]}, [0, 8], [40]) == [ImageSpan(0, 0, 8, 40, False)]


def test_no_span_for_decode_rows_text_before_an_image_or_one_token_images() -> None:
    assert image_spans({0: [(5, 20)]}, [0, 1], [31]) == []  # decode at position 30
    assert image_spans({0: [(50, 60)]}, [0, 30], [30]) == []  # image still to come
    assert image_spans({0: [(7, 7)]}, [0, 30], [30]) == []  # causal is already both ways
    assert image_spans({3: [(0, 9)]}, [0, 30], [30]) == []  # a request not in this step
