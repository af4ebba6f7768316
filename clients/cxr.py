"""Chest X-ray workloads of MedGemma 1.5 as requests (pure): a prior and a current study
compared, and an object localized with boxes.

- **Prior + current** (Google-Health/medgemma, notebooks/
  cxr_longitudinal_comparison_with_hugging_face.ipynb): one user turn [prior image, current
  image, question], no labels, no dates, no system prompt, greedy
  (`generation_config.do_sample = False`), 600 new tokens. The notebook shows the images as
  they are (its `preprocess_image = False`: no padding); each is here its DICOM's radiograph
  (CR or DX) through its own VOI window, scaled to 896 px and sent as PNG, as the
  radiograph recipe (clients.recipes) sends one. Both studies must be chest radiographs
  (CR or DX); the prior is the earlier one (clients.prior finds it with --prior auto).
- **Localization** (notebooks/cxr_anatomy_localization_with_hugging_face.ipynb): the image
  padded to a centred square, then the instruction (clients.boxes), greedy, 1000 new
  tokens; the boxes come back in the original image's pixels.

No attribute of either study reaches the prompt: only pixels and the caller's text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from clients.boxes import MAX_NEW_TOKENS, Padding, localize_prompt, pad_to_square
from clients.errors import StudyError
from clients.images import DEFAULT_MAX_SIZE, array_to_image, data_url, encode_image
from clients.limits import LimitError, Limits, fit_slices, text_tokens
from clients.messages import Message
from clients.series import Series, choose_series, group_series, order_slices
from clients.study import Sent
from clients.tasks import TaskRequest
from clients.windows import VOI, window_frame

CHEST_RADIOGRAPH = ("CR", "DX")
COMPARE_MAX_TOKENS = 600  # the longitudinal notebook's max_new_tokens
COMPARE_QUESTION = "Provide a comparison of these two images."  # batch's default: ours


@dataclass(frozen=True)
class Radiograph:
    """The one image of a study's radiograph series shown to the model, and what it was."""

    pixels: np.ndarray  # 8-bit, the original size, through its own VOI window
    sent: Sent
    source: Dataset  # the instance (for the report's reference)


def radiograph(datasets: Sequence[Dataset], series_uid: str | None, role: str) -> Radiograph:
    """The study's chest radiograph: its only image series, CR or DX, one image (StudyError
    naming the problem otherwise; `role` says which study: "the prior", "the current")."""
    series: Series = choose_series(group_series(datasets), series_uid)
    if series.modality not in CHEST_RADIOGRAPH:
        raise StudyError(
            f"{role} study is {series.modality or 'of no modality'}, not a chest radiograph "
            f"({' or '.join(CHEST_RADIOGRAPH)})"
        )
    ordered = order_slices(series)
    if len(ordered) != 1:
        raise StudyError(
            f"{role} study's series {series.name()} has {len(ordered)} images: a chest "
            "radiograph here is one image (choose the series with --series UID)"
        )
    first = ordered[0]
    where = f"{role} study's series {series.name()}"
    pixels = window_frame(first.source, first.frame, first.attrs, VOI, where)
    sent = Sent(
        series.uid, series.modality, 1, (0,), VOI, (), "radiograph, its own window", "", "images"
    )
    return Radiograph(pixels, sent, first.source)


def image_part(pixels: np.ndarray, max_size: int | None) -> dict[str, Any]:
    url = data_url(*encode_image(array_to_image(pixels), max_size=max_size))
    return {"type": "image_url", "image_url": {"url": url}}


@dataclass(frozen=True)
class PairSent:
    """What a comparison carried: the prior's and the current's image, by study."""

    prior_study: str
    current_study: str
    prior: Sent
    current: Sent

    def line(self) -> str:
        return (
            f"sent 2 images (prior, then current; chest radiographs, each its own window, no "
            f"labels, no dates); prior study {self.prior_study}, current study {self.current_study}"
        )


def pair_request(
    prior: Sequence[Dataset],
    current: Sequence[Dataset],
    question: str,
    *,
    limits: Limits | Callable[[], Limits] | None = None,
    max_tokens: int | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
) -> tuple[TaskRequest, PairSent, Radiograph]:
    """The comparison's request (the notebook's layout), what it carries, and the current
    radiograph (for a report). `limits` may be a function (MedGemmaClient.limits), asked
    only once both studies are found fit. Raises StudyError (LimitError when the server
    cannot take two images)."""
    if not question.strip():
        raise ValueError("the comparison needs a question")
    old = radiograph(prior, None, "the prior")
    new = radiograph(current, None, "the current")
    if old.sent.modality != new.sent.modality:
        raise StudyError(
            f"the prior study is {old.sent.modality} and the current {new.sent.modality}: "
            "compare two studies of one modality"
        )
    prior_uid, current_uid = str(prior[0].StudyInstanceUID), str(current[0].StudyInstanceUID)
    if prior_uid == current_uid:
        raise StudyError("the prior study is the current study: give an earlier one")
    tokens = max_tokens or COMPARE_MAX_TOKENS
    known = (limits() if callable(limits) else limits) or Limits()
    fit = fit_slices(2, known, text=text_tokens([question]), max_tokens=tokens)
    if fit.count < 2:
        raise LimitError(f"a comparison needs 2 images in one prompt: {fit.reason}; nothing sent")
    content = [image_part(old.pixels, max_size), image_part(new.pixels, max_size)]
    content.append({"type": "text", "text": question})
    messages: list[Message] = [{"role": "user", "content": content}]
    params = {"max_tokens": tokens, "temperature": 0.0}
    sent = PairSent(prior_uid, current_uid, old.sent, new.sent)
    return TaskRequest(messages, params), sent, new


@dataclass(frozen=True)
class Compare:
    """Comparison as a batch task (`batch --dicomweb URL --prior auto [--question TEXT]`):
    each study with the patient's most recent earlier study of its modality."""

    question: str = COMPARE_QUESTION
    name: str = "compare"
    needs_report: bool = False


@dataclass(frozen=True)
class Localize:
    """Localization as a batch task (`batch --task localize --object NAME`): what to find."""

    object_name: str
    name: str = "localize"
    needs_report: bool = False


def localize_request(
    pixels: np.ndarray,
    object_name: str,
    *,
    max_tokens: int | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
) -> tuple[TaskRequest, Padding]:
    """The notebook's localization request for an 8-bit image, and the padding the boxes
    are mapped back through: one user turn, the padded image then the instruction."""
    prompt = localize_prompt(object_name)
    square, pad = pad_to_square(pixels)
    content = [image_part(square, max_size), {"type": "text", "text": prompt}]
    params = {"max_tokens": max_tokens or MAX_NEW_TOKENS, "temperature": 0.0}
    return TaskRequest([{"role": "user", "content": content}], params), pad
