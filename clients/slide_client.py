"""A whole slide in a PACS -> a request for the model (thin I/O over clients.slide):
is the study a slide (QIDO-RS), its levels (WADO-RS metadata), the tissue test on the
coarsest level's frames, then only the frames under the patches sent (WADO-RS frames).

`slide_request(url, study_uid, question, limits=...)` builds the request and says what it
carries (`SlideRequest.sent.line()`: "sent 7 of 7 patches (10X); ..."); the patches are
fitted to the server's limits (clients.limits: images per prompt, then the context beside
the text and max_tokens), the reason said in that line. Frames come as stored
(`transfer-syntax=*`, as clients.dicomweb fetches instances) and are decoded here
(clients.slide_tiles.decode_frame). MedGemmaClient.ask_slide, `chat --dicomweb` and `batch
--dicomweb` call it for a study whose series include modality SM.

Errors are one line: StudyError (no slide, no tissue, a slide smaller than one patch,
undecodable frames; LimitError when not one patch fits), PacsError (the PACS).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from clients.dicomweb import DEFAULT_TIMEOUT_S, connect, talking_to
from clients.errors import PacsError, StudyError
from clients.images import DEFAULT_MAX_SIZE, data_url, encode_jpeg
from clients.limits import Fit, Limits, fit_slices, text_tokens
from clients.messages import Message
from clients.slide import (
    MAX_LUMINANCE,
    MAX_PATCHES,
    PATCH,
    SLIDE_MODALITY,
    Level,
    SlideSent,
    choose_level,
    slide_levels,
    spread,
    tissue_cells,
)
from clients.slide_tiles import (
    all_frames,
    decode_frame,
    frames_for,
    patch_pixels,
    whole_level,
)
from clients.tasks import Task, TaskRequest

MODALITY = "00080060"
AS_STORED_FRAMES = (("application/octet-stream", "*"),)  # each frame in its stored syntax
FRAMES_PER_CALL = 64  # frame numbers in one WADO-RS URL
SLIDE_PARAMS: dict[str, Any] = {"max_tokens": 300, "temperature": 0.0}


@dataclass(frozen=True)
class SlideRequest:
    """A slide's request, what it carries, and the study's metadata (for a report)."""

    request: TaskRequest
    sent: SlideSent
    metadata: list[Dataset]


def series_modalities(
    url: str, study_uid: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> set[str]:
    """The modalities of the study's series (QIDO-RS); empty for a study the PACS lacks."""
    with talking_to(url, f"the search for the series of study {study_uid}"):
        rows = connect(url, timeout_s).search_for_series(study_uid, fields=[MODALITY])
    return {str(v) for row in rows for v in row.get(MODALITY, {}).get("Value", [])}


def is_slide_study(url: str, study_uid: str) -> bool:
    """Whether a series of the study is a whole slide (modality SM)."""
    return SLIDE_MODALITY in series_modalities(url, study_uid)


def no_bulk_data(*_: str) -> None:
    """Metadata only: a bulk data URI (pixels) is not followed."""
    return None


def slide_metadata(
    url: str, study_uid: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[Dataset]:
    """Every instance's attributes, without pixels (WADO-RS metadata)."""
    missing = f"the PACS at {url} has no study {study_uid}"
    with talking_to(url, f"the retrieval of study {study_uid}'s metadata", missing):
        rows = connect(url, timeout_s).retrieve_study_metadata(study_uid)
    if not rows:
        raise StudyError(missing)
    return [Dataset.from_json(row, bulk_data_uri_handler=no_bulk_data) for row in rows]


def fetch_frames(
    url: str, level: Level, numbers: Sequence[int], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[int, np.ndarray]:
    """The level's frames `numbers` (1-based), decoded to RGB (WADO-RS, as stored)."""
    out: dict[int, np.ndarray] = {}
    web = connect(url, timeout_s)
    for start in range(0, len(numbers), FRAMES_PER_CALL):
        chunk = list(numbers[start : start + FRAMES_PER_CALL])
        with talking_to(url, f"the retrieval of frames of the slide's level {level.sop_uid}"):
            data = web.retrieve_instance_frames(
                level.study_uid,
                level.series_uid,
                level.sop_uid,
                frame_numbers=chunk,
                media_types=AS_STORED_FRAMES,
            )
        if len(data) != len(chunk):
            raise PacsError(
                f"the PACS at {url} sent {len(data)} frames for the {len(chunk)} asked of the "
                f"slide's level {level.sop_uid}"
            )
        out.update({n: decode_frame(bytes(d), level) for n, d in zip(chunk, data, strict=True)})
    return out


def wanted_patches(found: int, budget: int | None) -> tuple[int, str]:
    """How many of the tissue patches the recipe (or --max-slices) wants, and why fewer."""
    if budget is not None:
        if budget < 1:
            raise StudyError(f"--max-slices must be at least 1, not {budget}")
        return min(budget, found), (f"--max-slices {budget}" if budget < found else "")
    if found > MAX_PATCHES:
        return MAX_PATCHES, f"the recipe's cap of {MAX_PATCHES} patches"
    return found, ""


def fit_patches(
    found: int, budget: int | None, limits: Limits, *, texts: Sequence[str], max_tokens: int
) -> Fit:
    """How many of the `found` tissue patches to send (pure): the recipe's cap of 125 (or
    --max-slices), then the server's images per prompt and context (clients.limits), and
    why fewer. LimitError when not one fits."""
    wanted, why = wanted_patches(found, budget)
    fit = fit_slices(wanted, limits, text=text_tokens(texts), max_tokens=max_tokens)
    return Fit(fit.count, fit.reason or why)


def slide_turn(question: str, patches: Sequence[np.ndarray], max_size: int | None) -> Message:
    """One user turn: the text first, then the patches (JPEG; the same pixels, the same
    bytes)."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": question}]
    for pixels in patches:
        url = data_url(*encode_jpeg(pixels, max_size=max_size))
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": "user", "content": parts}


def slide_request(
    url: str,
    study_uid: str,
    question: str | Task,
    *,
    series_uid: str | None = None,
    budget: int | None = None,
    limits: Limits | Callable[[], Limits] | None = None,
    system: str | None = None,
    params: dict[str, Any] | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
) -> SlideRequest:
    """The request that shows the slide's tissue patches and asks `question` (or runs a
    task preset: its text, parameters and schema; no system prompt unless `system`).
    limits: the server's, or what asks them (called after the tissue test, before any
    patch is fetched). Raises StudyError, LimitError, PacsError: one line each."""
    task = question if isinstance(question, Task) else None
    text = task.text() if task is not None else str(question)
    metadata = slide_metadata(url, study_uid)
    levels = slide_levels(metadata, series_uid)
    chosen = choose_level(levels)
    level, coarse = chosen.level, levels[-1]
    coarse_frames = fetch_frames(url, coarse, all_frames(coarse))
    cells, whole = tissue_cells(whole_level(coarse, coarse_frames), coarse, level)
    where = f"series {level.series_uid}, level {chosen.index} ({level.columns} x {level.rows} px)"
    if whole == 0:
        raise StudyError(
            f"the slide at {chosen.label} is smaller than one {PATCH} x {PATCH} patch: nothing "
            f"sent; {where}"
        )
    if not cells:
        raise StudyError(
            f"the slide shows no tissue: none of its {whole} patches of {PATCH} px at "
            f"{chosen.label} has a mean luminance at or below {MAX_LUMINANCE:g} x 255 (EZ-WSI's "
            f"tissue test): nothing sent; {where}"
        )
    base = task.params() if task is not None else SLIDE_PARAMS
    request_params = {**base, **(params or {})}
    known = limits() if callable(limits) else limits
    fit = fit_patches(
        len(cells),
        budget,
        known or Limits(),
        texts=[t for t in (system, text) if t],
        max_tokens=int(request_params.get("max_tokens") or 0),
    )
    sent_cells = spread(cells, fit.count)
    frames = (
        coarse_frames
        if level == coarse
        else fetch_frames(url, level, frames_for(level, sent_cells))
    )
    patches = [patch_pixels(level, frames, cell) for cell in sent_cells]
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.append(slide_turn(text, patches, max_size))
    sent = SlideSent(
        level.series_uid,
        level.sop_uid,
        chosen.index,
        (level.columns, level.rows),
        chosen.label,
        len(cells),
        tuple(sent_cells),
        fit.reason,
    )
    schema = task.schema if task is not None else None
    return SlideRequest(TaskRequest(messages, request_params, schema), sent, metadata)


def level_instance(metadata: Sequence[Dataset], sent: SlideSent) -> list[Dataset]:
    """The attributes of the level the patches were cut from (a report references it)."""
    return [ds for ds in metadata if str(ds.get("SOPInstanceUID")) == sent.sop_uid]
