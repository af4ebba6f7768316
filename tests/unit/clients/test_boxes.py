"""Localization's answers parsed exactly as Google's notebook
(cxr_anatomy_localization_with_hugging_face.ipynb) prints them, mapped back through the
padding to the original pixels; every unusable answer is a BoxError holding the raw text."""

from __future__ import annotations

import numpy as np
import pytest

from clients.boxes import (
    LOCALIZE_PROMPT,
    BoxError,
    Padding,
    localize_prompt,
    overlay,
    pad_to_square,
    padding_of,
    parse_boxes,
)

# The notebook's printed answer for "right clavicle", verbatim (its output cell)
NOTEBOOK_ANSWER = (
    'Final Answer: ```json[{"box_2d": [140, 110, 340, 470], "label": "right clavicle"}]```'
)
THINKING = (
    "<unused94>thought\nThe right clavicle is on the image's left, above the lung apex. "
    'An example: ```json[{"box_2d": [1, 2, 3, 4], "label": "not this"}]```\n<unused95>'
)
SQUARE = padding_of(1000, 1000)  # normalized coordinates are pixels


def test_the_prompt_is_the_notebooks_with_the_object_named() -> None:
    prompt = localize_prompt("right  clavicle ")
    assert prompt.startswith("Instructions:\nThe following user query will require outputting")
    assert "Where is the right clavicle? Don't give a final answer without reasoning." in prompt
    assert '```json[{"box_2d": [800, 3, 840, 471], "label": "car"}, {"box_2d"' in prompt
    assert prompt.endswith('The object needs a "box_2d" and "label" key. Answer:')
    assert "{{" in LOCALIZE_PROMPT and "{{" not in prompt
    with pytest.raises(ValueError, match="--object"):
        localize_prompt("  ")


def test_the_notebooks_answer_parses_to_its_box() -> None:
    (box,) = parse_boxes(NOTEBOOK_ANSWER, SQUARE)
    assert box.label == "right clavicle"
    assert box.box_2d == (140, 110, 340, 470)
    assert (box.x0, box.y0, box.x1, box.y1) == (110, 140, 470, 340)
    assert not box.clipped


def test_a_thinking_trace_is_skipped_even_with_a_fence_in_it() -> None:
    (box,) = parse_boxes(THINKING + NOTEBOOK_ANSWER, SQUARE)
    assert box.label == "right clavicle" and box.box_2d == (140, 110, 340, 470)


def test_fences_with_newlines_and_several_objects() -> None:
    answer = (
        "Reasoning: both clavicles are visible.\nFinal Answer: ```json\n"
        '[{"box_2d": [140, 110, 340, 470], "label": "right clavicle"},\n'
        ' {"box_2d": [150, 530, 345, 890], "label": "left clavicle"}]\n```'
    )
    boxes = parse_boxes(answer, SQUARE)
    assert [b.label for b in boxes] == ["right clavicle", "left clavicle"]
    assert boxes[1].box_2d == (150, 530, 345, 890)


def test_final_answer_without_a_fence_is_read() -> None:
    answer = 'Final Answer: [{"box_2d": [140, 110, 340, 470], "label": "right clavicle"}]'
    (box,) = parse_boxes(answer, SQUARE)
    assert box.x1 == 470


def test_padding_is_the_notebooks_and_boxes_map_back_through_it() -> None:
    # a portrait 320 x 384 (W x H) image: 64 columns of padding, 32 left, 32 right
    pixels = np.full((384, 320), 200, np.uint8)
    square, pad = pad_to_square(pixels)
    assert square.shape == (384, 384) and pad == Padding(320, 384, 32, 0)
    assert (square[:, :32] == 0).all() and (square[:, 352:] == 0).all()
    assert (square[:, 32:352] == 200).all()
    # an odd difference: the notebook puts d // 2 first, the rest after
    wide, pad_w = pad_to_square(np.ones((5, 8, 3), np.uint8))
    assert wide.shape == (8, 8, 3) and pad_w.top == 1 and (wide[6:] == 0).all()
    (box,) = parse_boxes(NOTEBOOK_ANSWER, pad)
    scale = 384 / 1000
    assert box.x0 == pytest.approx(110 * scale - 32) and box.y0 == pytest.approx(140 * scale)
    assert box.x1 == pytest.approx(470 * scale - 32) and box.y1 == pytest.approx(340 * scale)


def test_a_box_reaching_into_the_padding_is_clipped_to_the_image() -> None:
    pad = padding_of(320, 384)  # 32 px padding left and right
    answer = 'Final Answer: ```json[{"box_2d": [100, 20, 300, 200], "label": "x"}]```'
    (box,) = parse_boxes(answer, pad)
    assert box.clipped and box.x0 == 0.0
    assert box.as_json()["clipped"] is True


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("The clavicle is at the top of the chest.", "no parseable boxes"),
        ("Final Answer: ```json[{box_2d: [1, 2]}]```", "does not parse"),
        ('Final Answer: ```json{"label": "x"}```', "no box_2d of four numbers"),
        ('Final Answer: ```json[{"box_2d": [1, 2, 3], "label": "x"}]```', "four numbers"),
        ('Final Answer: ```json[{"box_2d": [1, true, 3, 4], "label": "x"}]```', "four numbers"),
        ("Final Answer: ```json[]```", "not a list of objects"),
        ('Final Answer: ```json[{"box_2d": [100, 100, 1200, 400], "label": "x"}]```', "outside"),
        ('Final Answer: ```json[{"box_2d": [-5, 100, 200, 400], "label": "x"}]```', "outside"),
        ('Final Answer: ```json[{"box_2d": [300, 100, 200, 400], "label": "x"}]```', "y0 < y1"),
        ("<unused94>thought\nstill thinking when max_tokens ran out", "no parseable boxes"),
    ],
)
def test_unusable_answers_are_one_line_with_the_raw_answer_kept(answer: str, why: str) -> None:
    with pytest.raises(BoxError, match=why) as caught:
        parse_boxes(answer, SQUARE)
    assert caught.value.raw == answer
    assert "\n" not in str(caught.value)


def test_a_box_wholly_in_the_padding_is_outside_the_image() -> None:
    pad = padding_of(320, 384)  # columns 0..32 of the square are padding
    answer = 'Final Answer: ```json[{"box_2d": [100, 10, 300, 80], "label": "x"}]```'
    with pytest.raises(BoxError, match="outside the image: it lies in the padding"):
        parse_boxes(answer, pad)


def test_the_overlay_draws_on_the_original_image() -> None:
    pixels = np.full((384, 320), 100, np.uint8)
    (box,) = parse_boxes(NOTEBOOK_ANSWER, padding_of(320, 384))
    image = overlay(pixels, [box])
    assert image.size == (320, 384) and image.mode == "RGB"
    a = np.asarray(image)
    assert tuple(a[round(box.y0) + 20, round(box.x0)]) == (255, 0, 0)  # the left edge, red
    assert tuple(a[5, 5]) == (100, 100, 100)  # away from the box: the image as it was
