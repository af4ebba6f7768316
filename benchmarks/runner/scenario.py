"""The benchmark scenario: one pydantic model, loaded from YAML with command-line overrides.

A scenario says what load to send (image mix, prompts, output length, temperature), how
(closed loop at fixed concurrency levels, or open loop at Poisson arrival rates), for how
long, and what counts as a good request (the SLO behind goodput). `load_scenario`
validates the file and the overrides in one `model_validate` call (as deployment configs,
through serve.config.yaml_file) and raises `ScenarioError`, whose message names the file
and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve.config.yaml_file import ConfigError, FileKind, load_model


class ScenarioError(ConfigError):
    """A scenario file or override that cannot be used; the message names the problem."""


class ImageMix(BaseModel):
    """Which images the requests carry. Every image is generated and encoded before the run."""

    model_config = ConfigDict(extra="forbid")

    sizes: list[tuple[int, int]] = Field(
        default_factory=lambda: [(512, 512)],
        description="Image sizes as [width, height] pairs, used in turn.",
    )
    kind: Literal["noise", "xray", "ct"] = Field(
        "noise",
        description="`noise`: i.i.d. random RGB pixels, as vLLM's random-mm dataset (sent as "
        "JPEG); `xray`: a synthetic grey radiograph (sent as PNG); `ct`: each image request is "
        "one CT study: a synthetic phantom series of `per_request` square slices of `sizes` "
        "(serve.pacs.phantom, a new noise seed per study) laid out by clients.study as a "
        "client sends it: ordered, windowed, each slice followed by 'SLICE n', then the "
        "question (rates are reported as studies/s and slices/s).",
    )
    per_request: int = Field(
        1,
        ge=1,
        le=64,
        description="Images in each image request (kind ct: slices per study).",
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
        description="Distinct prepared requests (each with its own images), sent in turn. vLLM "
        "caches processed images, so repeats are cheaper than new images: use at least as many "
        "as the run sends to measure uncached images.",
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


class Slo(BaseModel):
    """Service-level objective: a request is good if it meets every limit set here."""

    model_config = ConfigDict(extra="forbid")

    ttft_ms: float | None = Field(None, gt=0, description="Most time to first token (ms).")
    tpot_ms: float | None = Field(
        None, gt=0, description="Most time per output token after the first (ms)."
    )
    e2e_ms: float | None = Field(None, gt=0, description="Most end-to-end latency (ms).")


class Load(BaseModel):
    """How load is offered. Each entry of `users` (or `rates`) is one level of the sweep."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["closed", "open"] = Field(
        "closed",
        description="`closed`: a fixed number of users, each sending its next request when the "
        "last one ends; `open`: requests arrive at a constant Poisson rate, whatever the latency.",
    )
    users: list[int] = Field(
        default_factory=lambda: [1],
        description="Closed loop: concurrent users per level (one entry: a single run; several: "
        "a concurrency sweep).",
    )
    rates: list[float] = Field(
        default_factory=list, description="Open loop: mean arrivals per second per level."
    )
    max_in_flight: int = Field(
        256,
        ge=1,
        description="Open loop: most requests in flight; an arrival beyond it is recorded as an "
        "error (the client, not the server, was saturated).",
    )
    duration_s: int = Field(30, ge=2, description="Seconds each level runs, warm-up included.")
    warmup_s: int = Field(
        5, ge=0, description="Seconds at the start of each level excluded from the figures."
    )
    user_class: Literal["fast", "http"] = Field(
        "fast",
        description="Closed loop: Locust user class: `fast` (FastHttpUser, geventhttpclient) or "
        "`http` (HttpUser, python-requests), to compare the load generator's cost.",
    )
    spawn_rate: float | None = Field(
        None, gt=0, description="Closed loop: users started per second (default: all at once)."
    )

    @model_validator(mode="after")
    def _levels(self) -> Load:
        if self.warmup_s >= self.duration_s:
            raise ValueError(
                f"warmup_s ({self.warmup_s}) must be shorter than duration_s ({self.duration_s})"
            )
        if self.mode == "closed":
            if not self.users or any(u < 1 for u in self.users):
                raise ValueError(f"closed loop needs users >= 1 per level, got {self.users}")
            if self.rates:
                raise ValueError("rates apply to mode: open only")
        else:
            if not self.rates or any(r <= 0 for r in self.rates):
                raise ValueError(f"open loop needs rates > 0 per level, got {self.rates}")
            if self.user_class != "fast":
                raise ValueError("open loop runs on FastHttpUser only (user_class: fast)")
        return self

    @property
    def levels(self) -> list[float]:
        """The sweep: users per level (closed) or arrivals per second (open)."""
        return [float(u) for u in self.users] if self.mode == "closed" else list(self.rates)


class Scenario(BaseModel):
    """One benchmark workload against an OpenAI-compatible chat endpoint."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "bench", pattern=r"^[\w.-]+$", description="Names the results folder (default: file stem)."
    )
    description: str = Field("", description="What the scenario is for.")
    deployment: str = Field(
        "configs/deployments/cpu-bench.yaml",
        description="Deployment config started by --start-server and used by the baseline.",
    )
    deployment_set: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the deployment config's fields when this harness starts the "
        "server (--start-server, baseline), e.g. {cpu_omp_threads_bind: '0'}.",
    )
    model: str | None = Field(
        None, description="Served model name to send (default: the deployment config's)."
    )
    api_key_env: str = Field(
        "MEDGEMMA_API_KEY",
        description="Environment variable holding the API key sent as a Bearer token, if set.",
    )
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
    load: Load = Field(default_factory=Load, description="Load shape, sweep and duration.")
    request_timeout_s: float = Field(
        600, gt=0, description="Seconds a request may wait between bytes before it fails."
    )
    metrics_interval_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Seconds between samples of the server's /metrics during the run (every "
        "replica's for a replicas deployment reached at its router): server_series.csv and "
        "timeline.png. 0: no sampling.",
    )
    baseline_requests: int = Field(
        8, ge=1, description="Requests the seed baseline (transformers generate) sends in turn."
    )
    baseline_threads: list[int] = Field(
        default_factory=list,
        description="torch thread counts the seed baseline tries on its warm-up request, "
        "keeping the fastest (empty: torch's default and 1; on 2 shared cores, 2 OpenMP "
        "threads can be many times slower than 1).",
    )
    seed: int | None = Field(
        None,
        ge=0,
        description="Seed of the generated images and arrival times. Unset: a new one per run "
        "(written to the results folder), so that a long-running server has not cached "
        "the images already.",
    )

    @model_validator(mode="after")
    def _known_tasks(self) -> Scenario:
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
        if self.images.text_only_share == 1 and self.images.dicom_share > 0:
            raise ValueError(
                "images.dicom_share > 0 needs some image requests (text_only_share < 1)"
            )
        return self


def rate_units(scenario: Scenario) -> dict[str, str]:
    """What a request and an image are in this scenario's rates: a CT study of slices, or
    a request of images (the report's `studies/s` and `slices/s`, or `req/s`)."""
    if scenario.images.kind == "ct":
        return {"request": "studies", "image": "slices"}
    return {"request": "req", "image": "images"}


SCENARIO = FileKind(
    noun="scenario",
    title="benchmark scenario",
    fields_hint="python -m benchmarks fields",
    error=ScenarioError,
    input_chars=80,
)


def load_scenario(
    path: str | os.PathLike[str], overrides: list[str] | dict[str, Any] | None = None
) -> Scenario:
    """Read a scenario YAML, apply `a.b=value` overrides, validate once; `name` defaults
    to the file's stem. Raises ScenarioError."""
    return load_model(Scenario, path, overrides, SCENARIO, defaults={"name": Path(path).stem})


def to_yaml(scenario: Scenario) -> str:
    """The resolved scenario as YAML (what a results folder keeps)."""
    return yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False)
