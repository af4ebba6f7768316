"""The chest X-ray workloads against a PACS and a server (thin I/O over clients.cxr):
fetch the studies (WADO-RS), find the prior (QIDO-RS, clients.prior), send, parse the boxes.

`compare_request` builds a prior + current comparison from a PACS; `localize_pixels`
sends one 8-bit image for localization and returns its boxes in that image's pixels
(`Localized`); `study_radiograph` is the study's one chest radiograph. MedGemmaClient's
compare_studies / localize / localize_study call these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydicom.dataset import Dataset

from clients.boxes import Box, Padding, parse_boxes
from clients.cxr import (
    CHEST_RADIOGRAPH,
    PairSent,
    Radiograph,
    localize_request,
    pair_request,
    radiograph,
)
from clients.images import DEFAULT_MAX_SIZE
from clients.limits import Limits
from clients.prior import CHAT_ADVICE, find_prior
from clients.results import ChatResult
from clients.study_request import fetch
from clients.tasks import TaskRequest

AUTO = "auto"  # --prior auto: the patient's most recent earlier study of the same modality


@dataclass(frozen=True)
class Comparison:
    """A comparison's request, what it carries, and the current study (for a report)."""

    request: TaskRequest
    sent: PairSent
    current: list[Dataset]
    radiograph: Radiograph  # the current study's image


def compare_request(
    url: str,
    study_uid: str,
    question: str,
    prior: str = AUTO,
    *,
    limits: Limits | Callable[[], Limits] | None = None,
    max_tokens: int | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
    advice: str = CHAT_ADVICE,
) -> Comparison:
    """Fetch the current study and its prior (`prior`: a StudyInstanceUID, or AUTO to find
    it by QIDO-RS; `advice` ends the line when there is none) and build the comparison.
    Raises StudyError, PacsError, LimitError."""
    current = fetch(url, study_uid, None)
    # The radiograph, not whatever instance comes first: a report stored into the study
    # (--store-sr) is an SR instance, and the prior's modality is the image's.
    radiograph_ds = next((d for d in current if d.get("Modality") in CHEST_RADIOGRAPH), current[0])
    prior_uid = find_prior(url, radiograph_ds, advice=advice) if prior == AUTO else prior
    earlier = fetch(url, prior_uid, None)
    request, sent, image = pair_request(
        earlier, current, question, limits=limits, max_tokens=max_tokens, max_size=max_size
    )
    return Comparison(request, sent, current, image)


def study_radiograph(
    url: str, study_uid: str, series_uid: str | None = None
) -> tuple[Radiograph, list[Dataset]]:
    """The study's one chest radiograph (CR or DX), and the study's instances."""
    datasets = fetch(url, study_uid, series_uid)
    return radiograph(datasets, series_uid, "the"), datasets


class Sender(Protocol):
    """What sends a request: MedGemmaClient."""

    def send(self, request: TaskRequest, **params: Any) -> ChatResult: ...


@dataclass
class Localized:
    """A localization's answer and its boxes in the original image's pixels."""

    result: ChatResult
    boxes: list[Box]
    padding: Padding
    pixels: np.ndarray  # the original image, 8-bit (for an overlay)


def localize_pixels(
    client: Sender,
    pixels: np.ndarray,
    object_name: str,
    *,
    max_size: int | None = DEFAULT_MAX_SIZE,
    **params: Any,
) -> Localized:
    """Send the image for localization (clients.cxr.localize_request) and parse the boxes.
    Raises BoxError (its `.raw` the whole answer) when the answer has no usable boxes."""
    max_tokens = params.pop("max_tokens", None)
    request, pad = localize_request(pixels, object_name, max_tokens=max_tokens, max_size=max_size)
    result = client.send(request, **params)
    return Localized(result, parse_boxes(result.text, pad), pad, np.asarray(pixels))
