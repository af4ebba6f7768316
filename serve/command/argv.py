"""Deployment config -> the vLLM OpenAI server's command line and environment (pure).

`to_vllm_argv` and `to_server_env` are pure functions of the config; `check_vllm_argv`
runs the result through vLLM's own argument parser, which knows every flag of the
installed vLLM version.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from serve.busy_wait import BUSY_WAIT_ENV
from serve.command.lora import lora_argv, lora_env, planned_paths
from serve.config.deployment import DeploymentConfig, is_local_path
from serve.host import host_cpu, resolved_dtype

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# The ASGI middleware the server imports; `serve` is installed in the server's environment.
GUARD_MIDDLEWARE = "serve.guard.middleware.RequestGuard"
# vLLM fetches any http(s) image URL when its domain list is empty; a list holding only a
# reserved, never-resolving name (RFC 2606 `.invalid`) makes it fetch nothing.
NO_REMOTE_MEDIA = "remote-image-urls-disabled.invalid"
# vLLM's processed-image cache in shared memory, never its default `lru`. With `lru` the API
# server keeps only a record of what the engine holds and sends an image it has processed
# before without its data; a request vLLM rejects after processing its images (max_tokens
# -5, a prompt too long, ...) never reaches the engine, so the next request with the same
# image got a 500 (vllm/multimodal/cache/lru.py, LruKeyReplicatedReceiverCache). With `shm`
# the API server writes the processed image into shared memory that the engine reads
# (vllm/multimodal/cache/shm.py): what it believes cached is cached (docs/operations.md).
MM_CACHE_TYPE = "shm"
# The CPU's busy wait for vLLM's worker and engine core (serve/busy_wait.py): none, since a
# small CPU host has no core to spare for a spinning reader.
CPU_BUSY_WAIT_S = 0.0
# Shown by name only in a printed command line.
SECRET_ENV = ("VLLM_API_KEY", "MEDGEMMA_GUARD_API_KEY", "HF_TOKEN")
# Gemma 3 attends both ways within an image, which no attention backend can compute exactly
# for an image split across prefill steps: vLLM forces --disable-chunked-mm-input on CUDA
# for these models (platforms/cuda.py), not on the CPU, where the image-mask plugin
# (serve/attention) refuses to start without it. Passed on the CPU whenever images may come.
NO_SPLIT_IMAGES = "disable_chunked_mm_input"


def flag(name: str, value: Any) -> list[str]:
    """One vLLM flag: `True` -> `--name`, `False` -> `--no-name`, dicts/lists -> JSON."""
    opt = "--" + name.replace("_", "-")
    if value is None:
        return []
    if value is True:
        return [opt]
    if value is False:
        return ["--no-" + name.replace("_", "-")]
    if isinstance(value, (dict, list)):
        return [opt, json.dumps(value, separators=(",", ":"))]
    return [opt, str(value)]


def to_vllm_argv(
    cfg: DeploymentConfig,
    model_path: str | None = None,
    lora_paths: Mapping[str, str] | None = None,
) -> list[str]:
    """The server's arguments (without the python executable). `model_path` overrides
    `cfg.model`, e.g. the folder a stand-in model was built into; `lora_paths` (adapter
    name -> folder or hub id) defaults to where `cfg.lora`'s adapters are or will be built."""
    model = model_path or cfg.model
    if model is None:
        raise ValueError("no model: build the stand-in first and pass its folder as model_path")
    argv = ["--model", str(model), "--served-model-name", cfg.model_name]
    if cfg.revision and model == cfg.model and not is_local_path(model):
        argv += flag("revision", cfg.revision) + flag("tokenizer_revision", cfg.revision)
    argv += flag("host", cfg.host) + flag("port", cfg.port) + flag("dtype", cfg.dtype)
    for name in (
        "max_model_len",
        "max_num_seqs",
        "max_num_batched_tokens",
        "gpu_memory_utilization",
        "max_num_queued_reqs",
        "ssl_certfile",
        "ssl_keyfile",
        "allowed_local_media_path",
    ):
        argv += flag(name, getattr(cfg, name))
    for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
        if getattr(cfg, name) != 1:
            argv += flag(name, getattr(cfg, name))
    if cfg.limit_mm_per_prompt:
        argv += flag("limit_mm_per_prompt", cfg.limit_mm_per_prompt)
    if cfg.device == "cpu" and cfg.limit_mm_per_prompt.get("image") != 0:
        argv += flag(NO_SPLIT_IMAGES, True)
    argv += flag("mm_processor_kwargs", cfg.mm_processor_kwargs)
    argv += flag("mm_processor_cache_gb", f"{cfg.mm_processor_cache_gb:g}")
    if cfg.mm_processor_cache_gb > 0:
        argv += flag("mm_processor_cache_type", MM_CACHE_TYPE)
    argv += flag("enable_prefix_caching", cfg.enable_prefix_caching)
    if cfg.enable_log_requests:
        argv += ["--enable-log-requests"]
    argv += ["--allowed-media-domains", *(cfg.allowed_media_domains or [NO_REMOTE_MEDIA])]
    argv += flag("shutdown_timeout", math.ceil(cfg.drain_timeout_s))
    argv += flag("middleware", GUARD_MIDDLEWARE)
    if cfg.lora is not None:
        argv += lora_argv(cfg, planned_paths(cfg) if lora_paths is None else lora_paths)
    for name, value in cfg.extra_args.items():
        argv += flag(name, value)
    return argv


def to_server_env(cfg: DeploymentConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """Variables to add to the server's environment. The API key is copied from
    `cfg.api_key_env` (never onto the command line): see `auth_env`."""
    env: dict[str, str] = {}
    if cfg.device == "cpu":
        if cfg.cpu_kvcache_space_gib is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.cpu_kvcache_space_gib)
        if cfg.cpu_omp_threads_bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cfg.cpu_omp_threads_bind
        if cfg.cpu_num_reserved_cpu is not None:
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(cfg.cpu_num_reserved_cpu)
    if cfg.busy_wait_s is not None:
        env[BUSY_WAIT_ENV] = f"{cfg.busy_wait_s:g}"
    elif cfg.device == "cpu":
        env[BUSY_WAIT_ENV] = f"{CPU_BUSY_WAIT_S:g}"
    if cfg.stand_in is not None or (cfg.model and is_local_path(cfg.model)):
        # Local weights: nothing may reach a model hub.
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
    if cfg.device == "cpu":
        # vLLM 0.32's AOT compile artifacts fail to load on the CPU ("'function' object has
        # no attribute 'finalize_loading'": its CPU mode compiles with plain inductor), so
        # every start compiled again; without AOT, torch's inductor cache is reused: model
        # warm-up 15 s instead of 33 s on a warm start here (docs/operations.md).
        env["VLLM_USE_AOT_COMPILE"] = "0"
    env["VLLM_NO_USAGE_STATS"] = "1"
    env["VLLM_MAX_IMAGE_PIXELS"] = str(cfg.max_image_pixels)
    env["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] = "0"  # a redirect would leave the domain list
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the log file as they happen
    env["MEDGEMMA_GUARD_MAX_REQUEST_BYTES"] = str(cfg.max_request_bytes)
    env["MEDGEMMA_GUARD_MEDIA_DOMAINS"] = ",".join(cfg.allowed_media_domains)
    env["MEDGEMMA_GUARD_LOCAL_MEDIA"] = "1" if cfg.allowed_local_media_path else "0"
    env["MEDGEMMA_GUARD_MAX_IN_FLIGHT"] = str(cfg.max_num_queued_reqs or 0)
    # Published on /v1/models for clients to fit their prompts to (serve.guard.model_limits);
    # without an image count in the config vLLM's own default applies, which is not known here.
    if "image" in cfg.limit_mm_per_prompt:
        env["MEDGEMMA_GUARD_IMAGES_PER_PROMPT"] = str(cfg.limit_mm_per_prompt["image"])
    if cfg.max_model_len is not None:
        env["MEDGEMMA_GUARD_MAX_MODEL_LEN"] = str(cfg.max_model_len)
    env["DO_NOT_TRACK"] = "1"
    env.update(lora_env(cfg))
    env.update(auth_env(cfg, environ.get(cfg.api_key_env) or None))
    env.update(cfg.env)
    return env


def auth_env(cfg: DeploymentConfig, key: str | None) -> dict[str, str]:
    """Who may call the server. The single key goes to vLLM's own check (VLLM_API_KEY),
    which the guard extends to every route; with `auth.keys_file` the guard alone checks
    keys (vLLM's check would refuse every service key), the single one beside the file's."""
    if cfg.auth.keys_file is None:
        return {"VLLM_API_KEY": key} if key else {}
    env = {
        "MEDGEMMA_GUARD_KEYS_FILE": str(cfg.auth.keys_file.expanduser()),
        "MEDGEMMA_GUARD_AUDIT_RETENTION_DAYS": str(cfg.auth.audit.retention_days),
    }
    if cfg.auth.audit.path is not None:
        env["MEDGEMMA_GUARD_AUDIT_FILE"] = str(cfg.auth.audit.path.expanduser())
    if key:
        env["MEDGEMMA_GUARD_API_KEY"] = key
    return env


def audit_file(cfg: DeploymentConfig, log_path: Path) -> Path | None:
    """Where the guard writes the audit trail of a server logging to `log_path` (None
    without `auth.keys_file`): the configured path, else audit-PORT.jsonl beside the log."""
    if cfg.auth.keys_file is None:
        return None
    return (cfg.auth.audit.path or log_path.parent / f"audit-{cfg.port}.jsonl").expanduser()


def compile_cache_env(cache_root: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """vLLM's and torch inductor's compile caches under the project's cache folder, for a
    server started on this host (pure), unless the environment already names them. Not for
    rendered manifests: a pod has its own file system."""
    wanted = {
        "VLLM_CACHE_ROOT": str(cache_root / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache_root / "torchinductor"),
    }
    return {k: v for k, v in wanted.items() if k not in environ}


def local_server_env(cfg: DeploymentConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """Variables to add to the environment of a server this host starts: `to_server_env`
    plus the compile caches in the project's cache folder (`$MEDGEMMA_CACHE` or `.cache/`)."""
    from serve.paths import cache_dir

    return {**compile_cache_env(cache_dir(environ), environ), **to_server_env(cfg, environ)}


def for_host(cfg: DeploymentConfig, cpu_flags: Collection[str]) -> DeploymentConfig:
    """`cfg` with `dtype: auto` on the CPU resolved for a CPU with these flags (pure; see
    serve.host: float32 where bf16 arithmetic is not native)."""
    return cfg.model_copy(update={"dtype": resolved_dtype(cfg.dtype, cfg.device, cpu_flags)})


def server_command(cfg: DeploymentConfig, model_path: str | None = None) -> list[str]:
    """The full command for this machine: this Python running vLLM's OpenAI server module.
    Stand-in LoRA adapters are named by the folders they are or will be built in (nothing
    is built: the launcher builds what is missing before it starts vLLM, and a --dry-run
    builds nothing)."""
    host = for_host(cfg, host_cpu()["flags"])
    return [sys.executable, "-m", SERVER_MODULE, *to_vllm_argv(host, model_path)]


def render_shell(command: list[str], env: Mapping[str, str]) -> str:
    """A copy-pasteable shell line; secret values are shown by reference, not value."""
    shown = []
    for k, v in sorted(env.items()):
        if k in SECRET_ENV:
            shown.append(f"{k}=<set from environment>")
        else:
            shown.append(f"{k}={shlex.quote(v)}")
    exe = command[0]
    if Path(exe) == Path(sys.executable):
        exe = "python"
    return " ".join([*shown, shlex.join([exe, *command[1:]])])


def check_vllm_argv(argv: list[str]) -> str | None:
    """Parse `argv` with vLLM's own server parser. Returns None if vLLM accepts it,
    else vLLM's error message (e.g. naming an unknown flag)."""
    import contextlib
    import io

    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            lines = [ln for ln in err.getvalue().strip().splitlines() if ln.strip()]
            return lines[-1] if lines else f"vLLM's parser exited with status {exc.code}"
    return None


def probes_images(limit_mm_per_prompt: dict[str, int]) -> bool:
    """Whether a deployment takes images (and so is probed with one)."""
    return limit_mm_per_prompt.get("image", 0) > 0
