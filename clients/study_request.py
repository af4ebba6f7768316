"""A study in a PACS -> a request for the model, one step after the other: fetch
(clients.dicomweb), choose the series (clients.series), fit it to the slice budget and
build the messages (clients.study), add the prompt's parameters (clients.tasks).

The budget is `--max-slices` when given, else every image of the series; either must fit
the server's image limit (its `limit_mm_per_prompt` image count) when the client knows it
(StudyOptions.image_limit: MEDGEMMA_IMAGE_LIMIT / --image-limit). vLLM does not publish
that limit, so when it is not set the server's own 400 ("At most N image(s) may be
provided in one prompt") is the message. `request_for` is pure; `fetch_request` adds the
WADO-RS fetch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from clients.dicomweb import fetch_study
from clients.errors import StudyError
from clients.images import DEFAULT_MAX_SIZE
from clients.messages import RADIOLOGIST
from clients.series import choose_series, group_series
from clients.study import Sent, series_messages, slice_budget
from clients.tasks import Task, TaskRequest

CHAT_PARAMS: dict[str, Any] = {"max_tokens": 300, "temperature": 0.0}


@dataclass(frozen=True)
class StudyOptions:
    """How a study becomes images: which series, how many slices, which window, which tags."""

    series_uid: str | None = None  # SeriesInstanceUID (or a multi-frame object's SOP UID)
    max_slices: int | None = None  # an even sample of this many slices
    image_limit: int | None = None  # the server's images per prompt, when known
    window: str | None = None  # clients.windows.WINDOWS; None: rgb for CT, voi otherwise
    tags: tuple[str, ...] = ()  # clients.study.ALLOWED_TAGS, added as one line of text
    max_size: int | None = DEFAULT_MAX_SIZE


def request_for(
    datasets: Sequence[Dataset],
    question: str,
    options: StudyOptions = StudyOptions(),
    *,
    system: str | None = RADIOLOGIST,
    params: dict[str, Any] | None = None,
    task: Task | None = None,
) -> tuple[TaskRequest, Sent]:
    """The request that shows the study's chosen series (sampled to the budget) and asks
    `question` (pure). With `task`, its system prompt, parameters and schema are used and
    `question` is its prompt's text. Raises StudyError / ImageError naming the problem."""
    series = choose_series(group_series(datasets), options.series_uid)
    budget = slice_budget(
        len(series.slices), image_limit=options.image_limit, max_slices=options.max_slices
    )
    messages, sent = series_messages(
        series,
        question,
        budget=budget,
        window=options.window,
        tags=options.tags,
        system=task.system if task is not None else system,
        max_size=options.max_size,
    )
    if task is not None:
        return TaskRequest(messages, {**task.params(), **(params or {})}, task.schema), sent
    return TaskRequest(messages, {**CHAT_PARAMS, **(params or {})}), sent


def task_request_for(
    task: Task,
    datasets: Sequence[Dataset],
    options: StudyOptions = StudyOptions(),
    *,
    max_tokens: int | None = None,
) -> tuple[TaskRequest, Sent]:
    """A task preset over a study (pure). Tasks that need a report cannot run on a study
    from a PACS, which has none (ValueError)."""
    if task.needs_report:
        raise ValueError(
            f"task {task.name!r} needs a report, and a study from a PACS comes without one"
        )
    params = {"max_tokens": max_tokens} if max_tokens else None
    return request_for(datasets, task.text(), options, params=params, task=task)


def fetch(url: str, study_uid: str, series_uid: str | None) -> list[Dataset]:
    """The study's instances: only the series when one is named, the whole study when the
    UID is not a series of it (it may name a multi-frame object, which choose_series finds)."""
    if series_uid is None:
        return fetch_study(url, study_uid)
    try:
        return fetch_study(url, study_uid, series_uid)
    except StudyError:
        return fetch_study(url, study_uid)


def fetch_request(
    url: str,
    study_uid: str,
    question: str | Task,
    options: StudyOptions = StudyOptions(),
    *,
    system: str | None = RADIOLOGIST,
    params: dict[str, Any] | None = None,
) -> tuple[TaskRequest, Sent]:
    """Fetch the study by WADO-RS and build its request (a question, or a task preset).
    Raises PacsError, StudyError, ImageError, ValueError: each one line."""
    datasets = fetch(url, study_uid, options.series_uid)
    if isinstance(question, Task):
        max_tokens = (params or {}).get("max_tokens")
        return task_request_for(question, datasets, options, max_tokens=max_tokens)
    return request_for(datasets, question, options, system=system, params=params)
