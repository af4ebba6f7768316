"""The deployment config: one pydantic model, loaded from YAML with command-line overrides.

A config describes one vLLM deployment (model, parallelism, limits, CPU tuning, API key
variable). It is data: `load_config` validates the file and the overrides in one
`model_validate` call (serve.config.yaml_file) and raises `ConfigError`, whose message
names the file and field. The schema is pure: it reads no file but the YAML, so
`python -m serve plan` and `render` load a config on any machine; whether the files a
config names exist (model folder, TLS files, adapters) is checked by the launch pre-flight
(serve.launch.preflight) on the machine that starts the server.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve.config.auth import AuthSettings
from serve.config.cluster import KubernetesSettings, RaySettings
from serve.config.lora import LoraSettings, StandInAdapter
from serve.config.model_source import form_problem, known_model_config, looks_local
from serve.config.model_source import is_local_path as is_local_path  # importers use it
from serve.config.replicas import ReplicaSettings, RouterSettings
from serve.config.restart import RestartPolicy
from serve.config.standin import StandIn
from serve.config.yaml_file import ConfigError as ConfigError  # importers use it
from serve.config.yaml_file import FileKind, load_model
from serve.model.gemma3 import SPLIT_IMAGES_REFUSED, gemma3_pitfall

Device = Literal["cpu", "cuda"]


class DeploymentConfig(BaseModel):
    """One vLLM OpenAI-compatible deployment of a MedGemma(-architecture) model."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None,
        description="Hugging Face Hub id (e.g. google/medgemma-4b-it; gated: set HF_TOKEN) or a "
        "local folder with the weights. Leave empty when `stand_in` is set.",
    )
    revision: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{40}$",
        description="The hub model's commit hash (40 hex digits) to load: vLLM's --revision "
        "and --tokenizer-revision, so every start serves the same files. Without it a hub "
        "id loads whatever the hub's main branch holds at first start (the launcher warns). "
        "Ignored for a local folder.",
    )
    stand_in: StandIn | None = Field(
        None,
        description="Serve the locally built random-weight stand-in instead of `model` "
        "(for machines without weights; its text is meaningless).",
    )
    served_model_name: str | None = Field(
        None, description="Model name clients send; defaults to `model`."
    )
    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the OpenAI-compatible API.")
    device: Device = Field("cuda", description="Hardware the config is for: `cpu` or `cuda`.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "bfloat16",
        description="Weight and activation dtype (MedGemma is trained in bf16). `auto` on "
        "device: cpu is bfloat16 where the CPU has native bf16 (avx512_bf16 or amx_bf16) and "
        "float32 elsewhere, where bf16 matrix products are far slower (serve/host.py); on cuda, "
        "vLLM's auto. "
        "float16 is refused for Gemma 3 models: their activations overflow its range.",
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        description="Maximum prompt + output tokens per request; at most the model's context "
        "(max_position_embeddings) where it is known: the stand-in's, a local folder's "
        "config.json, serve/model/hub_configs.",
    )
    max_num_seqs: int | None = Field(
        None, ge=1, description="Maximum sequences batched together (continuous batching)."
    )
    max_num_batched_tokens: int | None = Field(
        None, ge=16, description="Token budget of one scheduler step (prefill chunking)."
    )
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Share of each GPU's memory vLLM may use (weights + KV cache).",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs (or CPU ranks) one replica is split over."
    )
    pipeline_parallel_size: int = Field(
        1, ge=1, description="Pipeline stages (usually one per node)."
    )
    data_parallel_size: int = Field(
        1, ge=1, description="Independent engine replicas behind one API."
    )
    limit_mm_per_prompt: dict[str, int] = Field(
        default_factory=lambda: {"image": 1},
        description="Most items of each modality in one request, e.g. {image: 4}.",
    )
    mm_processor_kwargs: dict[str, Any] | None = Field(
        None,
        description="Gemma 3 image processor options, e.g. {do_pan_and_scan: true} to tile "
        "large images into extra 896 px crops.",
    )
    mm_processor_cache_gb: float = Field(
        0,
        ge=0,
        description="vLLM's cache of processed images (GiB of shared memory, /dev/shm): an "
        "image sent again (a volume's follow-up question) skips Gemma 3's image processor. 0 "
        "(the default) turns it off. On, it runs as vLLM's `shm` type, never its default "
        "`lru`, whose API server records an image as held by the engine even when vLLM then "
        "rejects the request, so the corrected request with that image got 500 "
        "(docs/operations.md#a-rejected-request-and-the-next-one). Ray renders turn it off.",
    )
    enable_prefix_caching: bool | None = Field(
        None,
        description="Reuse KV cache across requests that share a prefix (vLLM default if unset).",
    )
    cpu_kvcache_space_gib: int | None = Field(
        None, ge=1, description="CPU only: KV cache size in whole GiB (VLLM_CPU_KVCACHE_SPACE)."
    )
    cpu_omp_threads_bind: str | None = Field(
        None,
        description="CPU only: cores each rank binds to (VLLM_CPU_OMP_THREADS_BIND), e.g. '0|1' "
        "for two tensor-parallel ranks on cores 0 and 1, or 'auto'.",
    )
    cpu_num_reserved_cpu: int | None = Field(
        None,
        ge=0,
        description="CPU only: cores left to the front end (VLLM_CPU_NUM_OF_RESERVED_CPU).",
    )
    busy_wait_s: float | None = Field(
        None,
        ge=0,
        le=10,
        description="Seconds vLLM's worker and engine core spin waiting for their next message "
        "before they sleep (serve/busy_wait.py). Unset: 0 on the CPU, where the spin takes a "
        "core from the processes it waits for; vLLM's own 1 s on a GPU.",
    )
    api_key_env: str = Field(
        "MEDGEMMA_API_KEY",
        description="Name of the environment variable holding the API key (alone or beside "
        "`auth.keys_file`): every route but the probes then requires `Authorization: Bearer "
        "KEY`. The key itself never goes in a file.",
    )
    auth: AuthSettings = Field(
        default_factory=AuthSettings,
        description="Per-service keys (`keys_file`), their rate limits and the audit trail.",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Serve a non-loopback `host` with no key at all (neither $api_key_env nor "
        "auth.keys_file): anyone who reaches the port is served. Off: such a start is refused.",
    )
    enable_log_requests: bool = Field(
        False,
        description="Log request details. Off by default: prompts and images are patient data.",
    )
    ssl_certfile: Path | None = Field(
        None, description="PEM certificate: serve HTTPS instead of HTTP (set with `ssl_keyfile`)."
    )
    ssl_keyfile: Path | None = Field(None, description="PEM private key of `ssl_certfile`.")
    allowed_media_domains: list[str] = Field(
        default_factory=list,
        description="Hosts the server may fetch http(s) image URLs from. Empty (the default): "
        "no remote fetching at all; clients send images as data URLs.",
    )
    allowed_local_media_path: Path | None = Field(
        None,
        description="Folder that file:// image URLs may read from. Unset (the default): "
        "file:// URLs are refused.",
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Largest image (width x height) accepted; larger images and decompression "
        "bombs get 400 before they are decoded (VLLM_MAX_IMAGE_PIXELS).",
    )
    max_request_bytes: int = Field(
        64 * 2**20,
        ge=1024,
        description="Largest request body in bytes; larger bodies get 413 (serve.guard).",
    )
    max_num_queued_reqs: int | None = Field(
        None,
        ge=1,
        description="Requests in flight (running + waiting) beyond which new ones get 503 "
        "'engine busy' at once instead of queueing without bound. Unset: no limit.",
    )
    startup_timeout_s: float = Field(
        900, gt=0, description="Seconds to wait for /health and /v1/models before giving up."
    )
    drain_timeout_s: float = Field(
        30, ge=0, description="On SIGTERM, seconds in-flight requests get to finish."
    )
    nodes: int = Field(
        1,
        ge=1,
        description="Machines one deployment spans (TP x PP x DP devices split evenly over "
        "them). More than 1 runs through `python -m serve render ray|k8s`, not locally.",
    )
    gpu_type: str | None = Field(
        None,
        description="GPU the config is sized for (serve/plan/gpus.yaml, e.g. l4-24gb); the "
        "default of `python -m serve plan`.",
    )
    kubernetes: KubernetesSettings = Field(
        default_factory=KubernetesSettings,
        description="Kubernetes layout for `python -m serve render k8s`.",
    )
    ray: RaySettings = Field(
        default_factory=RaySettings,
        description="Ray cluster settings for `python -m serve render ray`.",
    )
    restart: RestartPolicy = Field(
        default_factory=RestartPolicy,
        description="Supervision of the server after start-up.",
    )
    replicas: ReplicaSettings | None = Field(
        None,
        description="Run several vLLM servers of this config behind vllm-router on `port` "
        "(see `router`). Unset: one server on `port`.",
    )
    router: RouterSettings = Field(
        default_factory=RouterSettings,
        description="The router in front of `replicas` (policy, retries, circuit breaker, "
        "health checks, queue).",
    )
    lora: LoraSettings | None = Field(
        None,
        description="LoRA fine-tunes served beside the base model (adapters by name, max "
        "rank, slots, runtime loading). Unset: no LoRA.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the server process."
    )
    extra_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Other vLLM flags, by long name without dashes (e.g. {enforce_eager: true}); "
        "checked by vLLM's own argument parser.",
    )

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"{v!r} is not an environment variable name")
        return v

    @field_validator("allowed_media_domains")
    @classmethod
    def _host_names(cls, v: list[str]) -> list[str]:
        for host in v:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
                raise ValueError(f"{host!r} is not a host name (no scheme, port or path)")
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> DeploymentConfig:
        # Whether the files exist is the launch pre-flight's (serve.launch.preflight).
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("set both `ssl_certfile` and `ssl_keyfile` for HTTPS, or neither")
        return self

    @field_validator("extra_args")
    @classmethod
    def _no_secrets_or_dupes(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            name = key.replace("-", "_")
            if name == "api_key":
                raise ValueError("api_key may not be written in a config: use `api_key_env`")
            if name in DeploymentConfig.model_fields:
                raise ValueError(f"{key!r} is a config field of its own: set it there")
            if name == "disable_chunked_mm_input" and v[key] is False:
                raise ValueError(SPLIT_IMAGES_REFUSED)
        return v

    @model_validator(mode="after")
    def _model_or_stand_in(self) -> DeploymentConfig:
        # A local folder's existence and config.json are the launch pre-flight's.
        if (self.model is None) == (self.stand_in is None):
            raise ValueError("set exactly one of `model` (hub id or local path) and `stand_in`")
        if self.model is not None and (problem := form_problem(self.model)):
            raise ValueError(f"model: {problem}")
        cpu_only = ("cpu_kvcache_space_gib", "cpu_omp_threads_bind", "cpu_num_reserved_cpu")
        if self.device == "cuda":
            set_cpu = [f for f in cpu_only if getattr(self, f) is not None]
            if set_cpu:
                raise ValueError(f"{', '.join(set_cpu)} apply to device: cpu only")
        elif self.gpu_memory_utilization is not None:
            raise ValueError("gpu_memory_utilization applies to device: cuda only")
        return self

    @model_validator(mode="after")
    def _gemma3_pitfalls(self) -> DeploymentConfig:
        # With the facts known without the file system (stand-in preset, hub shape files);
        # a local folder's config.json is read by the launch pre-flight.
        if self.model is not None and looks_local(self.model):
            return self
        problem = gemma3_pitfall(
            self.dtype,
            self.max_model_len,
            self.mm_processor_kwargs,
            self.model or f"the {self.stand_in.preset} stand-in",  # type: ignore[union-attr]
            known_model_config(self.model, self.stand_in),
        )
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _nodes_split_evenly(self) -> DeploymentConfig:
        if self.world_size % self.nodes:
            raise ValueError(
                f"nodes: {self.nodes} nodes cannot share the {self.world_size} devices of "
                "tensor_parallel_size x pipeline_parallel_size x data_parallel_size evenly"
            )
        return self

    @model_validator(mode="after")
    def _replicas_fit(self) -> DeploymentConfig:
        r = self.replicas
        if r is None:
            if "router" in self.model_fields_set:
                raise ValueError("router: applies only with `replicas:` (set replicas.count)")
            return self
        if self.nodes > 1:
            raise ValueError("replicas: cannot be combined with nodes > 1")
        if self.data_parallel_size > 1:
            raise ValueError(
                "data_parallel_size: replicas are the data parallelism here; set "
                "data_parallel_size: 1 with `replicas:`"
            )
        if "replicas" in self.kubernetes.model_fields_set:
            raise ValueError("kubernetes.replicas: with `replicas:` the count is replicas.count")
        ranks = self.tensor_parallel_size * self.pipeline_parallel_size
        if problem := r.layout_problem(self.device, ranks, self.cpu_omp_threads_bind):
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _lora_adapters_fit(self) -> DeploymentConfig:
        # Local adapter folders, and hub adapters on a stand-in, are the launch pre-flight's.
        if self.lora is None:
            return self
        for name, source in self.lora.adapters.items():
            where = f"lora.adapters.{name}"
            if name == self.model_name:
                raise ValueError(f"{where}: the name is the served model's own name; rename it")
            if isinstance(source, StandInAdapter):
                if self.stand_in is None:
                    raise ValueError(f"{where}: a stand_in adapter needs a `stand_in` model")
            elif problem := form_problem(source):
                raise ValueError(f"{where}: {problem}")
        return self

    @property
    def model_name(self) -> str:
        """The name clients send as `model`."""
        return self.served_model_name or self.model or f"tiny-medgemma-{self.stand_in.preset}"  # type: ignore[union-attr]

    @property
    def world_size(self) -> int:
        """Devices one deployment uses: TP x PP x DP."""
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size

    @property
    def devices_per_node(self) -> int:
        """Devices each of the `nodes` machines contributes."""
        return self.world_size // self.nodes


DEPLOYMENT = FileKind(
    noun="config",
    title="deployment config",
    fields_hint="python -m serve --help-config",
    error=ConfigError,
)


def load_config(
    path: str | os.PathLike[str] | None, overrides: dict[str, Any] | list[str] | None = None
) -> DeploymentConfig:
    """Read a YAML config (or none), apply overrides, validate once. Raises ConfigError.
    An override of `model` replaces the file's `stand_in`, and the other way round."""
    return load_model(
        DeploymentConfig, path, overrides, DEPLOYMENT, exclusive=("model", "stand_in")
    )
