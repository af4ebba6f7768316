"""Run a task preset against the server: build its request, send it, validate typed answers.

`run_task` / `arun_task` are the one-call API: `run_task(client, "findings", ["cxr.png"])`.
A task with a schema (consistency) returns its pydantic model in `result.parsed`, or
raises SchemaError if the answer does not match it (e.g. cut off by max_tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import openai

from clients.chat import ChatResult, acomplete, complete
from clients.images import ImageSource
from clients.tasks import Task, TaskRequest, get_task, parse_answer


def as_task(task: str | Task) -> Task:
    return get_task(task) if isinstance(task, str) else task


def finish(request: TaskRequest, result: ChatResult) -> ChatResult:
    """Attach the validated answer when the request asked for a schema."""
    if request.schema is not None:
        result.parsed = parse_answer(result.text, request.schema)
    return result


def send(
    client: openai.OpenAI, request: TaskRequest, *, model: str | None = None, **params: Any
) -> ChatResult:
    result = complete(client, request.messages, model=model, **{**request.params, **params})
    return finish(request, result)


async def asend(
    client: openai.AsyncOpenAI, request: TaskRequest, *, model: str | None = None, **params: Any
) -> ChatResult:
    result = await acomplete(client, request.messages, model=model, **{**request.params, **params})
    return finish(request, result)


def run_task(
    client: openai.OpenAI,
    task: str | Task,
    images: Sequence[ImageSource | dict[str, Any]] = (),
    *,
    model: str | None = None,
    **inputs: Any,
) -> ChatResult:
    """Build the task's request from images and inputs (report=, question=,
    patient_history=, turns=, max_size=, frame=, max_tokens=) and send it."""
    return send(client, as_task(task).build(images, **inputs), model=model)


async def arun_task(
    client: openai.AsyncOpenAI,
    task: str | Task,
    images: Sequence[ImageSource | dict[str, Any]] = (),
    *,
    model: str | None = None,
    **inputs: Any,
) -> ChatResult:
    return await asend(client, as_task(task).build(images, **inputs), model=model)
