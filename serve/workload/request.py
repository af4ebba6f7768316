"""The request fields of a benchmark scenario (one pydantic model) and their reader.

`ScenarioRequest` holds the fields of a scenario file that say what one request is:
`images`, `prompts`, `max_tokens`, `fixed_output`, `temperature` and `slo` (and, for
studies asked several questions, `prompts.follow_ups`; for volumes mixed with radiographs,
`images.radiograph_share`). The
benchmark's `Scenario` subclasses it (one model for the scenario file, these fields
defined once). `read_request` reads only these fields of a scenario file, as the planner
and the renderer need them; the other fields are the benchmark's, checked when it loads
the file.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serve.config.yaml_file import ConfigError, FileKind, format_validation_error, read_yaml_mapping


class ScenarioError(ConfigError):
    """A scenario file or override that cannot be used; the message names the problem."""


SCENARIO = FileKind(
    noun="scenario",
    title="benchmark scenario",
    fields_hint="python -m benchmarks fields",
    error=ScenarioError,
    input_chars=80,
)


class ImageMix(BaseModel):
    """Which images the requests carry. Every image is generated and encoded before the run."""

    model_config = ConfigDict(extra="forbid")

    sizes: list[tuple[int, int]] = Field(
        default_factory=lambda: [(512, 512)],
        description="Image sizes as [width, height] pairs, used in turn.",
    )
    kind: Literal["noise", "xray", "ct", "slide"] = Field(
        "noise",
        description="`noise`: i.i.d. random RGB pixels, as vLLM's random-mm dataset (sent as "
        "JPEG); `xray`: a synthetic grey radiograph (sent as PNG); `slide`: each image is a "
        "whole slide's tissue patch (serve.pacs.slide.tissue_patch, a new seed each, sent as "
        "the clients send a patch), after the question as the slide recipe lays them out "
        "(use prompts.text; per_request 125 is the recipe's cap); `ct`: each image request is "
        "one CT study: a synthetic phantom series of `per_request` square slices of `sizes` "
        "(serve.pacs.phantom, a new noise seed per study) laid out by clients.study as a "
        "client sends it: ordered, windowed, each slice followed by 'SLICE n', then the "
        "question (rates are reported as studies/s and slices/s).",
    )
    per_request: int = Field(
        1,
        ge=1,
        le=256,
        description="Images in each image request (kind ct: slices per study; Google's CT "
        "notebook sends 85).",
    )
    radiograph_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="kind ct: share of studies that are a single radiograph (one synthetic grey "
        "X-ray, as kind xray) instead of a `per_request`-slice volume, asked the same questions: "
        "a mix of volumes with radiographs.",
    )
    dicom_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of image requests whose images are synthetic 16-bit DICOM datasets, "
        "converted by the clients' DICOM path (windowing, 8-bit, PNG).",
    )
    text_only_share: float = Field(
        0.0, ge=0, le=1, description="Share of requests with no image at all."
    )
    distinct: int = Field(
        64,
        ge=1,
        le=4096,
        description="Distinct prepared requests (each with its own images), sent in turn; with "
        "prompts.follow_ups, distinct sessions (a study and its follow-ups). vLLM caches "
        "processed images and prefixes, so repeats are cheaper than new images: use at least "
        "as many as the run sends to measure uncached images.",
    )
    max_size: int = Field(
        896, ge=16, description="Longest image side sent (the clients downscale larger images)."
    )


class Prompts(BaseModel):
    """The text of each request: the clients' task presets, or a literal prompt."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(
        default_factory=lambda: ["findings"],
        min_length=1,
        description="Names in clients.tasks.TASKS (findings, summary, interpret, teaching, "
        "consistency), used in turn.",
    )
    text: str | None = Field(
        None, description="A literal user prompt instead of the tasks' (with no system prompt)."
    )
    follow_ups: list[str] = Field(
        default_factory=list,
        description="Follow-up questions on the same study, asked in order after the first "
        "request, one request each: the same images and instruction text with the question "
        "replaced (not a multi-turn history). A study is then 1 + len(follow_ups) requests; "
        "with prefix caching a follow-up's prefill is only its new question tokens, as its "
        "images and instruction hit the cache the first request filled.",
    )


class Slo(BaseModel):
    """Service-level objective: a request is good if it meets every limit set here."""

    model_config = ConfigDict(extra="forbid")

    ttft_ms: float | None = Field(None, gt=0, description="Most time to first token (ms).")
    tpot_ms: float | None = Field(
        None, gt=0, description="Most time per output token after the first (ms)."
    )
    e2e_ms: float | None = Field(None, gt=0, description="Most end-to-end latency (ms).")


class ScenarioRequest(BaseModel):
    """What one request of a benchmark scenario sends and expects."""

    model_config = ConfigDict(extra="forbid")

    images: ImageMix = Field(default_factory=ImageMix, description="The image mix.")
    prompts: Prompts = Field(default_factory=Prompts, description="The request texts.")
    max_tokens: int = Field(64, ge=1, le=32768, description="Output tokens asked for.")
    fixed_output: bool = Field(
        True,
        description="Generate exactly max_tokens (ignore_eos + min_tokens), as vLLM's benchmark "
        "does; false lets the model stop naturally.",
    )
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0: greedy).")
    slo: Slo = Field(default_factory=Slo, description="Limits for goodput.")

    @model_validator(mode="after")
    def _known_tasks(self) -> ScenarioRequest:
        if self.prompts.text is None:
            from clients.tasks import TASKS

            unknown = [t for t in self.prompts.tasks if t not in TASKS]
            if unknown:
                raise ValueError(
                    f"prompts.tasks: unknown task(s) {unknown}; known: {sorted(TASKS)}"
                )
        if self.images.kind == "ct":
            if self.images.dicom_share > 0:
                raise ValueError(
                    "images.dicom_share applies to noise and xray; a CT study is DICOM"
                )
            odd = [list(size) for size in self.images.sizes if size[0] != size[1]]
            if odd:
                raise ValueError(f"images.sizes: CT slices are square (rows = columns), got {odd}")
        if self.images.radiograph_share > 0 and self.images.kind != "ct":
            raise ValueError("images.radiograph_share mixes radiographs into kind ct studies")
        if self.images.text_only_share == 1 and self.images.dicom_share > 0:
            raise ValueError(
                "images.dicom_share > 0 needs some image requests (text_only_share < 1)"
            )
        return self


def read_request(path: str | os.PathLike[str]) -> ScenarioRequest:
    """The request fields of the scenario file at `path`, validated (the file's other
    fields are left to the benchmark). Raises ScenarioError naming the file and the field."""
    data = read_yaml_mapping(path, SCENARIO)
    fields = {k: v for k, v in data.items() if k in ScenarioRequest.model_fields}
    try:
        return ScenarioRequest.model_validate(fields)
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(exc, str(path), SCENARIO)) from None
