"""A study in a PACS -> a request for the model, one step after the other: fetch
(clients.dicomweb), choose the series (clients.series), show it by its recipe fitted to the
server's limits (clients.recipes, clients.limits, clients.study), add the prompt's
parameters (clients.tasks).

The limits are the client's (MedGemmaClient.limits: learned from the server's /v1/models,
else --image-limit / MEDGEMMA_IMAGE_LIMIT); the answer's max_tokens counts against the
context. `request_for` is pure; `fetch_request` adds the WADO-RS fetch. A study whose
series include a whole slide (modality SM, found by QIDO-RS first) is read by tissue
patches instead (clients.slide_client: only the frames it needs are fetched).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from clients.dicomweb import fetch_study
from clients.errors import StudyError
from clients.images import DEFAULT_MAX_SIZE
from clients.limits import Limits
from clients.series import choose_series, group_series
from clients.slide import SlideSent
from clients.slide_client import SlideRequest, is_slide_study, slide_request
from clients.study import RECIPE, Sent, series_messages
from clients.tasks import Task, TaskRequest

CHAT_PARAMS: dict[str, Any] = {"max_tokens": 300, "temperature": 0.0}


@dataclass(frozen=True)
class StudyOptions:
    """How a study becomes images: which series, how many slices, which window, which tags."""

    series_uid: str | None = None  # SeriesInstanceUID (or a multi-frame object's SOP UID)
    max_slices: int | None = None  # an even sample of this many slices; None: the recipe's
    window: str | None = None  # clients.windows.WINDOWS; None: the recipe's
    tags: tuple[str, ...] = ()  # clients.study.ALLOWED_TAGS, added as one line of text
    max_size: int | None = DEFAULT_MAX_SIZE


def request_for(
    datasets: Sequence[Dataset],
    question: str,
    options: StudyOptions = StudyOptions(),
    *,
    system: str | None = RECIPE,
    params: dict[str, Any] | None = None,
    task: Task | None = None,
    limits: Limits | None = None,
) -> tuple[TaskRequest, Sent]:
    """The request that shows the study's chosen series by its recipe, fitted to `limits`,
    and asks `question` (pure). system: the recipe's by default (none for a volume, whose
    instruction opens the user turn; "You are an expert radiologist." for a radiograph).
    With `task`, its system prompt, parameters and schema are used and `question` is its
    prompt's text. Raises StudyError / ImageError naming the problem (LimitError, a
    StudyError, when not one image fits)."""
    series = choose_series(group_series(datasets), options.series_uid)
    base = task.params() if task is not None else CHAT_PARAMS
    request_params = {**base, **(params or {})}
    messages, sent = series_messages(
        series,
        question,
        budget=options.max_slices,
        window=options.window,
        tags=options.tags,
        system=task.system if task is not None else system,
        max_size=options.max_size,
        limits=limits,
        max_tokens=int(request_params.get("max_tokens") or 0),
    )
    schema = task.schema if task is not None else None
    return TaskRequest(messages, request_params, schema), sent


def task_request_for(
    task: Task,
    datasets: Sequence[Dataset],
    options: StudyOptions = StudyOptions(),
    *,
    max_tokens: int | None = None,
    limits: Limits | None = None,
) -> tuple[TaskRequest, Sent]:
    """A task preset over a study (pure). Tasks that need a report cannot run on a study
    from a PACS, which has none (ValueError)."""
    if task.needs_report:
        raise ValueError(
            f"task {task.name!r} needs a report, and a study from a PACS comes without one"
        )
    params = {"max_tokens": max_tokens} if max_tokens else None
    return request_for(datasets, task.text(), options, params=params, task=task, limits=limits)


def fetch(url: str, study_uid: str, series_uid: str | None) -> list[Dataset]:
    """The study's instances: only the series when one is named, the whole study when the
    UID is not a series of it (it may name a multi-frame object, which choose_series finds)."""
    if series_uid is None:
        return fetch_study(url, study_uid)
    try:
        return fetch_study(url, study_uid, series_uid)
    except StudyError:
        return fetch_study(url, study_uid)


def check_slide_options(options: StudyOptions) -> None:
    """--window and --tags are for radiology series: a slide's patches are shown as they are."""
    if options.window or options.tags:
        raise StudyError("--window and --tags are for radiology series, not a whole slide")


def slide_fetch_request(
    url: str,
    study_uid: str,
    question: str | Task,
    options: StudyOptions = StudyOptions(),
    *,
    system: str | None = None,
    params: dict[str, Any] | None = None,
    limits: Limits | Callable[[], Limits] | None = None,
) -> SlideRequest:
    """A whole slide's request (clients.slide_client), --max-slices capping the patches.
    system: none by default (the recipe: the text, then the patches)."""
    check_slide_options(options)
    return slide_request(
        url,
        study_uid,
        question,
        series_uid=options.series_uid,
        budget=options.max_slices,
        limits=limits,
        system=None if system is RECIPE else system,
        params=params,
        max_size=options.max_size,
    )


def fetch_request(
    url: str,
    study_uid: str,
    question: str | Task,
    options: StudyOptions = StudyOptions(),
    *,
    system: str | None = RECIPE,
    params: dict[str, Any] | None = None,
    limits: Limits | None = None,
) -> tuple[TaskRequest, Sent | SlideSent]:
    """Fetch the study by WADO-RS and build its request (a question, or a task preset);
    a whole slide by its tissue patches. Raises PacsError, StudyError, ImageError,
    ValueError: each one line."""
    if is_slide_study(url, study_uid):
        slide = slide_fetch_request(
            url, study_uid, question, options, system=system, params=params, limits=limits
        )
        return slide.request, slide.sent
    datasets = fetch(url, study_uid, options.series_uid)
    if isinstance(question, Task):
        max_tokens = (params or {}).get("max_tokens")
        return task_request_for(question, datasets, options, max_tokens=max_tokens, limits=limits)
    return request_for(datasets, question, options, system=system, params=params, limits=limits)
