"""The benchmark scenario: one pydantic model, loaded from YAML with command-line overrides.

A scenario says what load to send, how (closed loop at fixed concurrency levels, or open
loop at Poisson arrival rates), for how long, and what counts as a good request. What one
request sends and expects (image mix, prompts, output length, temperature, the SLO behind
goodput) is `serve.workload.request.ScenarioRequest`, which `Scenario` extends with the
run: the deployment, the load, the timeouts, the baseline and the seed. `load_scenario`
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

from serve.config.yaml_file import load_model
from serve.workload.request import SCENARIO, ScenarioError, ScenarioRequest

__all__ = ["Load", "Scenario", "ScenarioError", "load_scenario", "rate_units", "to_yaml"]


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


class Scenario(ScenarioRequest):
    """One benchmark workload against an OpenAI-compatible chat endpoint: its requests'
    fields (images, prompts, max_tokens, fixed_output, temperature, slo) are
    ScenarioRequest's."""

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


def rate_units(scenario: Scenario) -> dict[str, str]:
    """What a request and an image are in this scenario's rates: a CT study of slices, or
    a request of images (the report's `studies/s` and `slices/s`, or `req/s`)."""
    if scenario.images.kind == "ct":
        return {"request": "studies", "image": "slices"}
    return {"request": "req", "image": "images"}


def load_scenario(
    path: str | os.PathLike[str], overrides: list[str] | dict[str, Any] | None = None
) -> Scenario:
    """Read a scenario YAML, apply `a.b=value` overrides, validate once; `name` defaults
    to the file's stem. Raises ScenarioError."""
    return load_model(Scenario, path, overrides, SCENARIO, defaults={"name": Path(path).stem})


def to_yaml(scenario: Scenario) -> str:
    """The resolved scenario as YAML (what a results folder keeps)."""
    return yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False)
