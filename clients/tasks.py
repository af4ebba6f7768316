"""The use cases MedGemma's authors list, each a small preset of prompts and parameters.

A `Task` turns inputs (images, a report, the patient's history, earlier turns) into a
`TaskRequest`: the chat messages plus sampling parameters, and for `consistency` a JSON
schema that vLLM's structured output (xgrammar) enforces while decoding. `parse_answer`
validates the consistency answer with pydantic. Pure: chat.MedGemmaClient sends the
request.

The presets follow MedGemma's model card: the system prompt "You are an expert
radiologist.", greedy decoding, a few hundred new tokens. Outputs support, never replace,
a clinician's reading.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from clients.errors import SchemaError
from clients.image_input import ImageSource
from clients.images import DEFAULT_MAX_SIZE
from clients.messages import RADIOLOGIST, Message, build_messages


class ConsistencyCheck(BaseModel):
    """Does a radiology report agree with its images? The typed answer of `consistency`."""

    model_config = ConfigDict(extra="forbid")

    consistent: bool = Field(description="True if the report agrees with the image(s).")
    discrepancies: list[Annotated[str, StringConstraints(max_length=300)]] = Field(
        max_length=10,
        description="Each statement of the report the image does not support, or an image "
        "finding the report misses; empty when consistent.",
    )
    confidence: float = Field(ge=0, le=1, description="Confidence in the verdict, 0 to 1.")


@dataclass(frozen=True)
class TaskRequest:
    """What to send: messages, sampling parameters, an optional response schema."""

    messages: list[Message]
    params: dict[str, Any]
    schema: type[BaseModel] | None = None


@dataclass(frozen=True)
class Task:
    """A use-case preset. `prompt` may contain {report} and {question}."""

    name: str
    summary: str
    prompt: str
    max_tokens: int
    system: str = RADIOLOGIST
    temperature: float = 0.0
    needs_report: bool = False
    needs_images: bool = True
    schema: type[BaseModel] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def build(
        self,
        images: Sequence[ImageSource | dict[str, Any]] = (),
        *,
        report: str | None = None,
        question: str | None = None,
        patient_history: str | None = None,
        turns: Sequence[Message] = (),
        max_size: int | None = DEFAULT_MAX_SIZE,
        frame: int | None = None,
        max_tokens: int | None = None,
    ) -> TaskRequest:
        """The request for these inputs. Raises ValueError naming a missing input."""
        if self.needs_report and not (report and report.strip()):
            raise ValueError(f"task {self.name!r} needs the report text (report=...)")
        if self.needs_images and not images and not turns:
            raise ValueError(f"task {self.name!r} needs at least one image")
        system = self.system
        if patient_history:
            system = f"{system}\n\nPatient history: {patient_history.strip()}"
        messages = build_messages(
            self.text(report=report, question=question),
            images,
            system=system,
            history=turns,
            max_size=max_size,
            frame=frame,
        )
        return TaskRequest(messages, self.params(max_tokens), self.schema)

    def text(self, *, report: str | None = None, question: str | None = None) -> str:
        """The user turn's text: the prompt filled in, and the schema when there is one."""
        text = self.prompt.format(
            report=(report or "").strip(), question=(question or "").strip() or DEFAULT_QUESTION
        )
        if self.schema is not None:
            schema_json = json.dumps(self.schema.model_json_schema())
            text = f"{text}\n\nAnswer with JSON only, matching this schema: {schema_json}"
        return text

    def params(self, max_tokens: int | None = None) -> dict[str, Any]:
        """The sampling parameters (and the response format of a task with a schema)."""
        params: dict[str, Any] = {
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature,
            **self.extra,
        }
        if self.schema is not None:
            params["response_format"] = response_format(self.schema)
        return params


DEFAULT_QUESTION = "What do you see, and what would you consider next?"


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """OpenAI `response_format` asking vLLM to constrain decoding to the model's schema."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": schema.__name__,
            "schema": schema.model_json_schema(),
            "strict": True,
        },
    }


def parse_answer(text: str | None, schema: type[BaseModel]) -> BaseModel:
    """Validate a JSON answer against the schema. Raises SchemaError with the raw text."""
    raw = text or ""
    try:
        return schema.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise SchemaError(
            f"the answer does not match {schema.__name__}: {where}: {first['msg']} "
            f"({exc.error_count()} error(s)); answer starts {raw[:120]!r}",
            raw,
        ) from exc


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            name="findings",
            summary="findings for an image (detection support)",
            prompt="Describe this X-ray. List each finding on its own line with its location; "
            "say 'No acute findings' if there are none.",
            max_tokens=400,
        ),
        Task(
            name="summary",
            summary="plain-language summary of a report, checked against its images",
            prompt="Summarise this radiology report for the referring clinician in a few "
            "sentences, using the image(s) to check it.\n\nReport:\n{report}",
            max_tokens=300,
            needs_report=True,
        ),
        Task(
            name="interpret",
            summary="interpretation assistant: multi-turn, with the patient's history",
            prompt="{question}",
            max_tokens=500,
            needs_images=False,
        ),
        Task(
            name="teaching",
            summary="synthetic teaching text from an image, for residents",
            prompt="Write a short teaching case for radiology residents based on this image: "
            "the key findings, the differential diagnosis and one learning point. It is "
            "synthetic educational text, not a report.",
            max_tokens=500,
        ),
        Task(
            name="consistency",
            summary="image-report consistency check, typed JSON",
            prompt="Compare this radiology report with the image(s). Is the report "
            "consistent with what the image shows? List the discrepancies.\n\nReport:\n{report}",
            max_tokens=1024,  # room for the longest valid answer: the JSON must close
            needs_report=True,
            schema=ConsistencyCheck,
        ),
    )
}


def get_task(task: str | Task) -> Task:
    """The preset called `task` (a Task is returned as it is); KeyError's message lists the
    known ones."""
    if isinstance(task, Task):
        return task
    try:
        return TASKS[task]
    except KeyError:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(TASKS)}") from None
