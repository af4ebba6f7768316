"""LoRA adapters of a deployment: where each one is, whether it fits the base model, and
the vLLM flags that serve them.

The pure parts (`module_dims`, `adapter_problem`, `planned_paths`, `lora_argv`) take data
and return data; `check_local_adapter` reads an adapter folder's `adapter_config.json`
and its safetensors header (no tensors) and raises ValueError with one line naming the
problem; `adapter_paths` builds the stand-in adapters it names, then returns where each
adapter is (what a verify step or the launcher hands to vLLM or peft).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serve.config.deployment import DeploymentConfig

# peft key of one LoRA matrix of a decoder layer's linear module.
LORA_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])\.weight$")
# The env variable that turns vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter on.
RUNTIME_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def module_dims(
    hidden: int, intermediate: int, heads: int, kv_heads: int, head_dim: int
) -> dict[str, tuple[int, int]]:
    """(input, output) features of each Gemma 3 decoder linear module a LoRA targets."""
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, intermediate),
        "up_proj": (hidden, intermediate),
        "down_proj": (intermediate, hidden),
    }


def base_layout(cfg: DeploymentConfig) -> tuple[dict[str, tuple[int, int]], int] | None:
    """The deployment model's module dims and layer count, or None where they cannot be
    known without a download (a hub model without shape data in serve/model/hub_configs).
    A stand-in's come from its preset (nothing is built)."""
    if cfg.stand_in is not None:
        from serve.model.presets import PRESETS

        p = PRESETS[cfg.stand_in.preset]
        dims = module_dims(
            p.text_hidden, p.text_intermediate, p.text_heads, p.text_kv_heads, p.head_dim
        )
        return dims, p.text_layers
    from serve.model.shapes import ShapeError
    from serve.plan.inputs import shape_for_config

    try:
        s = shape_for_config(cfg, build_stand_in=False)
    except ShapeError:
        return None
    dims = module_dims(s.hidden_size, s.intermediate_size, s.num_heads, s.num_kv_heads, s.head_dim)
    return dims, s.num_layers


def adapter_rank(adapter_config: Mapping[str, Any]) -> int:
    """The largest rank in a peft adapter_config.json (`r` and any `rank_pattern`)."""
    ranks = [int(adapter_config.get("r") or 0)]
    ranks += [int(r) for r in (adapter_config.get("rank_pattern") or {}).values()]
    return max(ranks)


def adapter_problem(
    adapter_config: Mapping[str, Any],
    tensor_shapes: Mapping[str, list[int]],
    *,
    max_rank: int,
    deployment_model: str,
    base: tuple[dict[str, tuple[int, int]], int] | None,
) -> str | None:
    """Why a peft adapter cannot be served on this deployment (None: it can). Checks the
    rank against `max_rank`, then that it was built for this base model: by the shapes of
    its matrices against the base's modules where these are known (a base named
    differently but of the same architecture passes), else by the base's name."""
    if adapter_config.get("peft_type", "LORA") != "LORA":
        return f"is a {adapter_config.get('peft_type')} adapter; vLLM serves LoRA only"
    rank = adapter_rank(adapter_config)
    if rank > max_rank:
        return f"rank {rank} is above lora.max_rank {max_rank}; raise max_rank or retrain"
    built_for = str(adapter_config.get("base_model_name_or_path") or "an unnamed base")
    if base is None:
        if built_for.rstrip("/") != deployment_model.rstrip("/"):
            return (
                f"was built for another base model ({built_for}); this deployment serves "
                f"{deployment_model}"
            )
        return None
    dims, n_layers = base
    for key, shape in sorted(tensor_shapes.items()):
        m = LORA_KEY.search(key)
        if m is None or "vision" in key:
            continue
        layer, module, which = int(m.group(1)), m.group(2), m.group(3)
        if module not in dims:
            continue
        if layer >= n_layers:
            return (
                f"was built for another base model ({built_for}): it has a layer {layer}, "
                f"the deployment's model has {n_layers} layers"
            )
        want_in, want_out = dims[module]
        got = shape[1] if which == "A" else shape[0]
        want = want_in if which == "A" else want_out
        if got != want:
            side = "inputs" if which == "A" else "outputs"
            return (
                f"was built for another base model ({built_for}): its {module} has {got} "
                f"{side}, the deployment's model has {want}"
            )
    return None


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's header (the tensors are not read)."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def check_local_adapter(where: str, folder: Path, cfg: DeploymentConfig) -> None:
    """Raise ValueError (one line, starting with `where`) unless `folder` is a peft LoRA
    adapter this deployment can serve."""
    assert cfg.lora is not None
    if not folder.is_dir():
        raise ValueError(f"{where}: local path {str(folder)!r} does not exist or is not a folder")
    config_file = folder / "adapter_config.json"
    weights = folder / "adapter_model.safetensors"
    if not config_file.is_file():
        raise ValueError(
            f"{where}: {str(folder)!r} has no adapter_config.json; is it a peft adapter folder?"
        )
    try:
        adapter_config = json.loads(config_file.read_text())
        shapes = safetensors_shapes(weights) if weights.is_file() else {}
    except (OSError, ValueError, struct.error) as exc:
        raise ValueError(f"{where}: cannot read the adapter in {str(folder)!r} ({exc})") from None
    if not isinstance(adapter_config, dict):
        raise ValueError(f"{where}: {config_file} is not a JSON object")
    deployment_model = cfg.model or planned_base_dir(cfg)
    problem = adapter_problem(
        adapter_config,
        shapes,
        max_rank=cfg.lora.max_rank,
        deployment_model=deployment_model,
        base=base_layout(cfg),
    )
    if problem is not None:
        raise ValueError(f"{where}: {problem}")


def planned_base_dir(cfg: DeploymentConfig) -> str:
    """The stand-in model's folder (built or not) for a stand-in config (pure)."""
    from serve.paths import standin_dir

    assert cfg.stand_in is not None
    return str(standin_dir(cfg.stand_in.preset, cfg.stand_in.seed))


def planned_paths(cfg: DeploymentConfig) -> dict[str, str]:
    """Name -> local folder or hub id of every adapter, stand-in adapters at the folder
    they are (or will be) built in. Pure: nothing is built or read."""
    from serve.config.deployment import StandInAdapter
    from serve.standin.adapter import adapter_dir

    if cfg.lora is None:
        return {}
    paths: dict[str, str] = {}
    for name, source in cfg.lora.adapters.items():
        if isinstance(source, StandInAdapter):
            spec = source.stand_in
            paths[name] = str(adapter_dir(Path(planned_base_dir(cfg)), spec.rank, spec.seed))
        else:
            paths[name] = str(Path(source).expanduser()) if _is_local(source) else source
    return paths


def _is_local(source: str) -> bool:
    from serve.config.deployment import is_local_path

    return is_local_path(source)


def adapter_paths(cfg: DeploymentConfig) -> dict[str, str]:
    """Name -> local folder or hub id of every adapter of `cfg`, building the stand-in
    model and its stand-in adapters first if they are not there yet."""
    from serve.config.deployment import StandInAdapter

    if cfg.lora is None:
        return {}
    stand_ins = {n: s for n, s in cfg.lora.adapters.items() if isinstance(s, StandInAdapter)}
    if stand_ins:
        from serve.standin import adapter, tiny_model

        assert cfg.stand_in is not None
        base = tiny_model.ensure(cfg.stand_in.preset, cfg.stand_in.seed)
        for source in stand_ins.values():
            adapter.ensure(base, source.stand_in.rank, source.stand_in.seed)
    return planned_paths(cfg)


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
