"""Config sections for several replicas of one deployment behind vLLM's router.

`DeploymentConfig` holds them as `replicas:` (how many vLLM servers, the CPU cores or GPUs
and ports of each) and `router:` (vllm-router's policy, retries, circuit breaker, health
checks and queue). Defaults are vllm-router 0.1.17's own, so an empty `router:` section
runs the router as its authors ship it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The routing policies of vllm-router 0.1.17 that work with plain worker URLs. Its
# `kv_aware` policy also exists but needs ZMQ KV-event sources from every worker.
RouterPolicy = Literal[
    "random",
    "round_robin",
    "cache_aware",
    "power_of_two",
    "consistent_hash",
    "sticky_least_loaded",
]
# A core list as VLLM_CPU_OMP_THREADS_BIND takes it: "0", "0-3", "0,2", and "|" between
# the tensor-parallel ranks of one replica ("0|1").
CORES = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*(\|\d+(-\d+)?(,\d+(-\d+)?)*)*$")
GPU_IDS = re.compile(r"^\d+(,\d+)*$")


def core_ids(spec: str) -> list[int]:
    """Every core a VLLM_CPU_OMP_THREADS_BIND value names: "0-2|5" -> [0, 1, 2, 5] (pure)."""
    out: list[int] = []
    for part in re.split(r"[|,]", spec):
        first, _, last = part.partition("-")
        out += range(int(first), int(last or first) + 1)
    return out


class ReplicaSettings(BaseModel):
    """Several identical vLLM servers of the deployment, each on its own cores or GPUs."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(2, ge=1, description="How many vLLM servers (replicas) to run.")
    cpus: list[str] | None = Field(
        None,
        description="device: cpu only. Cores of each replica (its VLLM_CPU_OMP_THREADS_BIND), "
        "one entry per replica, e.g. ['0', '1'] or ['0-3', '4-7']; '|' separates the "
        "tensor-parallel ranks of one replica ('0|1'). Unset: this machine's cores split "
        "evenly at launch.",
    )
    gpus: list[str] | None = Field(
        None,
        description="device: cuda only. GPUs of each replica (its CUDA_VISIBLE_DEVICES), one "
        "entry per replica, e.g. ['0', '1', '2', '3'] or ['0,1', '2,3'] with "
        "tensor_parallel_size 2. Unset: consecutive blocks of GPUs. Kubernetes ignores it "
        "(the device plugin assigns GPUs).",
    )
    first_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of replica 0; replica i listens on first_port + i, on 127.0.0.1 "
        "(only the router reaches them). Unset: the config's port + 1.",
    )

    @field_validator("cpus")
    @classmethod
    def _core_lists(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        seen: set[int] = set()
        for spec in v:
            if not CORES.match(spec):
                raise ValueError(f"{spec!r} is not a core list like '0', '0-3', '0,2' or '0|1'")
            ids = set(core_ids(spec))
            if ids & seen:
                raise ValueError(f"core(s) {sorted(ids & seen)} are given to two replicas")
            seen |= ids
        return v

    @field_validator("gpus")
    @classmethod
    def _gpu_lists(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        seen: set[str] = set()
        for spec in v:
            if not GPU_IDS.match(spec):
                raise ValueError(f"{spec!r} is not a GPU list like '0' or '0,1'")
            ids = set(spec.split(","))
            if ids & seen:
                raise ValueError(f"GPU(s) {sorted(ids & seen)} are given to two replicas")
            seen |= ids
        return v

    def layout_problem(self, device: str, ranks: int, omp_bind: str | None) -> str | None:
        """What is wrong with the cores or GPUs listed for `device` when each replica has
        `ranks` (tensor x pipeline parallel) ranks, or None (`omp_bind`: the config's
        cpu_omp_threads_bind, which replicas.cpus replaces)."""
        if device == "cpu":
            if self.gpus is not None:
                return "replicas.gpus: applies to device: cuda only (use replicas.cpus)"
            if omp_bind is not None:
                return (
                    "cpu_omp_threads_bind: with `replicas:` each replica's cores are replicas.cpus"
                )
            listed, what, field = self.cpus, "core group", "replicas.cpus"
            per = [len(spec.split("|")) for spec in self.cpus or []]
        else:
            if self.cpus is not None:
                return "replicas.cpus: applies to device: cpu only (use replicas.gpus)"
            listed, what, field = self.gpus, "GPU", "replicas.gpus"
            per = [len(spec.split(",")) for spec in self.gpus or []]
        if listed is not None and len(listed) != self.count:
            count = f"replicas.count {self.count}"
            return f"{field}: {len(listed)} entries for {count}; give one per replica"
        for i, n in enumerate(per):
            if n != ranks:
                return (
                    f"{field}: replica {i} has {n} {what}(s), but tensor_parallel_size x "
                    f"pipeline_parallel_size is {ranks}"
                )
        return None


class RetrySettings(BaseModel):
    """How the router retries a request a replica failed (5xx, connection error) on another."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Retry failed requests (vllm-router: on).")
    max_retries: int = Field(5, ge=1, description="Attempts per request (vllm-router: 5).")
    initial_backoff_ms: int = Field(
        50, ge=0, description="Wait before the first retry (vllm-router: 50 ms)."
    )
    max_backoff_ms: int = Field(
        30_000, ge=0, description="Longest wait between retries (vllm-router: 30000 ms)."
    )
    backoff_multiplier: float = Field(
        1.5, ge=1, description="Growth of the wait per retry (vllm-router: 1.5)."
    )
    jitter_factor: float = Field(
        0.2, ge=0, le=1, description="Random share added to each wait (vllm-router: 0.2)."
    )


class CircuitBreakerSettings(BaseModel):
    """When the router stops sending to a failing replica, and when it tries it again."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Use circuit breakers (vllm-router: on).")
    failure_threshold: int = Field(
        10, ge=1, description="Failures that open a replica's breaker (vllm-router: 10)."
    )
    success_threshold: int = Field(
        3, ge=1, description="Successes that close it again (vllm-router: 3)."
    )
    timeout_s: int = Field(
        60, ge=1, description="Seconds an open breaker waits before a trial (vllm-router: 60)."
    )
    window_s: int = Field(
        120, ge=1, description="Window in which failures are counted (vllm-router: 120 s)."
    )


class HealthCheckSettings(BaseModel):
    """The router's own health checks of each replica (GET `endpoint`, no API key needed)."""

    model_config = ConfigDict(extra="forbid")

    interval_s: int = Field(
        60, ge=1, description="Seconds between checks of each replica (vllm-router: 60)."
    )
    timeout_s: int = Field(5, ge=1, description="Timeout of one check (vllm-router: 5 s).")
    failure_threshold: int = Field(
        3, ge=1, description="Failed checks in a row that mark a replica down (vllm-router: 3)."
    )
    success_threshold: int = Field(
        2, ge=1, description="Passed checks in a row that mark it up again (vllm-router: 2)."
    )
    endpoint: str = Field(
        "/health", pattern=r"^/", description="Path checked (vllm-router: /health)."
    )


class QueueSettings(BaseModel):
    """The router's admission limit: requests beyond it wait in a queue, then get 429."""

    model_config = ConfigDict(extra="forbid")

    max_concurrent_requests: int = Field(
        32768, ge=1, description="Requests in flight through the router (vllm-router: 32768)."
    )
    size: int = Field(
        100,
        ge=0,
        description="Requests that may wait beyond that; 0 answers 429 at once (vllm-router: 100).",
    )
    timeout_s: int = Field(
        60, ge=1, description="Longest wait in the queue before 429 (vllm-router: 60 s)."
    )


class RouterSettings(BaseModel):
    """vllm-router (the vLLM project's Rust router) in front of the replicas."""

    model_config = ConfigDict(extra="forbid")

    policy: RouterPolicy = Field(
        "cache_aware",
        description="How a request picks its replica: round_robin, random, power_of_two "
        "(the less loaded of two), cache_aware (the replica holding the longest shared "
        "prefix, balanced under skew), consistent_hash, sticky_least_loaded "
        "(vllm-router: cache_aware).",
    )
    retries: RetrySettings = Field(default_factory=RetrySettings, description="Retries.")
    circuit_breaker: CircuitBreakerSettings = Field(
        default_factory=CircuitBreakerSettings, description="Circuit breakers per replica."
    )
    health_check: HealthCheckSettings = Field(
        default_factory=HealthCheckSettings, description="Health checks of the replicas."
    )
    queue: QueueSettings = Field(default_factory=QueueSettings, description="Admission queue.")
    request_timeout_s: int = Field(
        1800, ge=1, description="Longest request through the router (vllm-router: 1800 s)."
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of the router's Prometheus /metrics. Unset: the port after the "
        "last replica's.",
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="The router's log level."
    )
    image: str | None = Field(
        None,
        description="Kubernetes: container image with the `vllm-router` command. Unset: "
        "kubernetes.image (serve/Dockerfile installs vllm-router; the vLLM project publishes "
        "the router as a PyPI wheel, not as an image of its own).",
    )
