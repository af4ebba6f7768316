"""The chest X-ray requests (pure), on the synthetic pair: the comparison is one turn
[prior image, current image, question] with nothing else (no labels, dates, system or
identifier), greedy; localization sends the padded square then the notebook's prompt. A
prior of another modality, the same study twice and a server taking one image are one line
each, and nothing is built."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from clients.boxes import localize_prompt
from clients.cxr import localize_request, pair_request, radiograph
from clients.errors import StudyError
from clients.limits import LimitError, Limits
from clients.prior import Dated, latest_before
from serve.pacs.phantom import PhantomSpec, phantom_series
from serve.pacs.radiograph import PATIENT_ID, PATIENT_NAME, chest_pair

QUESTION = "Provide a comparison of these two images."


def decoded(part: dict) -> np.ndarray:
    data = part["image_url"]["url"].split(",", 1)[1]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


@pytest.fixture(scope="module")
def pair() -> list:
    return chest_pair()


def test_the_pair_is_prior_current_question_and_nothing_else(pair: list) -> None:
    prior, current = pair
    request, sent, image = pair_request([prior], [current], QUESTION, limits=Limits(2, 4096))
    (turn,) = request.messages  # no system message
    assert turn["role"] == "user"
    kinds = [p["type"] for p in turn["content"]]
    assert kinds == ["image_url", "image_url", "text"] and turn["content"][2]["text"] == QUESTION
    first, second = decoded(turn["content"][0]), decoded(turn["content"][1])
    assert np.array_equal(first, radiograph([prior], None, "p").pixels)  # the prior first
    assert np.array_equal(second, radiograph([current], None, "c").pixels)
    assert not np.array_equal(first, second)
    assert request.params == {"max_tokens": 600, "temperature": 0.0}
    text = str(request.messages)
    for identifier in (PATIENT_ID, PATIENT_NAME, "PHANTOM", prior.StudyDate, "prior", "SLICE"):
        assert identifier not in text.replace(QUESTION, "")
    assert sent.prior_study == prior.StudyInstanceUID
    assert sent.current_study == current.StudyInstanceUID
    assert "sent 2 images (prior, then current" in sent.line()
    assert image.source.SOPInstanceUID == current.SOPInstanceUID


def test_a_prior_of_another_modality_is_one_line(pair: list) -> None:
    ct = phantom_series(PhantomSpec(slices=2, size=16))[:1]
    with pytest.raises(StudyError, match="the prior study is CT, not a chest radiograph"):
        pair_request(ct, [pair[1]], QUESTION)


def test_the_same_study_twice_and_one_image_per_prompt_are_refused(pair: list) -> None:
    with pytest.raises(StudyError, match="the prior study is the current study"):
        pair_request([pair[1]], [pair[1]], QUESTION)
    with pytest.raises(LimitError, match="a comparison needs 2 images in one prompt"):
        pair_request([pair[0]], [pair[1]], QUESTION, limits=Limits(1, 4096))


def test_localize_sends_the_padded_square_then_the_notebooks_prompt(pair: list) -> None:
    pixels = radiograph([pair[1]], None, "the").pixels
    request, pad = localize_request(pixels, "right clavicle")
    (turn,) = request.messages
    image, text = turn["content"]
    assert text == {"type": "text", "text": localize_prompt("right clavicle")}
    square = decoded(image)
    assert square.shape[0] == square.shape[1] == 384  # 320 x 384 padded, not scaled
    assert (square[:, : pad.left] == 0).all() and pad.left == 32
    assert np.array_equal(square[:, 32:352], pixels)
    assert request.params == {"max_tokens": 1000, "temperature": 0.0}


def test_the_prior_is_the_latest_strictly_earlier_study() -> None:
    now = Dated("c", "20240415", "101500")
    rows = [
        Dated("old", "20230101", "120000"),
        Dated("p", "20240108", "090000"),
        Dated("same-day-later", "20240415", "110000"),
        Dated("same-day-earlier", "20240415", "0800"),
        Dated("c", "20240415", "101500"),
    ]
    assert latest_before(rows, now) == rows[3]
    assert latest_before(rows[:2], now) == rows[1]
    assert latest_before([rows[2], rows[4]], now) is None
