"""A deployment's LoRA adapters as vLLM flags and environment, and where each adapter is
(pure: nothing is built or read).

Stand-in adapters are named by the folder they are, or will be, built in
(serve.standin.adapter.adapter_dir); the launcher builds what is missing before vLLM
starts (serve.launch.lora), the pre-flight checks local folders (serve.launch.preflight).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from serve.config.deployment import DeploymentConfig, StandInAdapter, is_local_path
from serve.paths import standin_dir
from serve.standin.adapter import adapter_dir

# The env variable that turns vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter on.
RUNTIME_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def planned_base_dir(cfg: DeploymentConfig) -> str:
    """The stand-in model's folder (built or not) for a stand-in config (pure)."""
    assert cfg.stand_in is not None
    return str(standin_dir(cfg.stand_in.preset, cfg.stand_in.seed))


def planned_paths(cfg: DeploymentConfig) -> dict[str, str]:
    """Name -> local folder or hub id of every adapter, stand-in adapters at the folder
    they are (or will be) built in. Nothing is built or read."""
    if cfg.lora is None:
        return {}
    paths: dict[str, str] = {}
    for name, source in cfg.lora.adapters.items():
        if isinstance(source, StandInAdapter):
            spec = source.stand_in
            paths[name] = str(adapter_dir(Path(planned_base_dir(cfg)), spec.rank, spec.seed))
        else:
            paths[name] = str(Path(source).expanduser()) if is_local_path(source) else source
    return paths


def lora_argv(cfg: DeploymentConfig, paths: Mapping[str, str]) -> list[str]:
    """vLLM's LoRA flags for `cfg` with adapters at `paths` (pure). Each adapter is a JSON
    --lora-modules entry whose base_model_name is the served model, so /v1/models lists it
    with `parent` = the base."""
    lora = cfg.lora
    if lora is None:
        return []
    argv = ["--enable-lora", "--max-lora-rank", str(lora.max_rank)]
    argv += ["--max-loras", str(lora.max_loras)]
    if lora.max_cpu_loras is not None:
        argv += ["--max-cpu-loras", str(lora.max_cpu_loras)]
    if paths:
        argv.append("--lora-modules")
        for name in lora.adapters:
            module = {"name": name, "path": paths[name], "base_model_name": cfg.model_name}
            argv.append(json.dumps(module, separators=(",", ":")))
    return argv


def lora_env(cfg: DeploymentConfig) -> dict[str, str]:
    """The server's environment for LoRA (pure): runtime loading when the config allows it."""
    if cfg.lora is not None and cfg.lora.runtime_updates:
        return {RUNTIME_ENV: "True"}
    return {}
