"""The launch pre-flight: what a deployment config needs of this machine's file system,
checked before anything starts (or dry-runs).

The schema (serve.config) is pure so that any config plans and renders on any machine;
here the files it names are looked at: the TLS certificate and key, the local media
folder, a local model folder (and its config.json, for the Gemma 3 pitfalls), the keys
file (present, private, well-formed), and each local LoRA adapter (its
adapter_config.json and safetensors header, against the base model's shapes). A `host`
other machines can reach needs a key (`api_key_env` set, or `auth.keys_file`) unless
`allow_unauthenticated` says otherwise. `preflight` raises a `ConfigError`
(`PreflightError`), worded as a validation error of the file: `<file>: invalid
deployment config`, then one line per problem.
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from serve.auth.keys import KeysFileError, read_keys_file
from serve.command.lora import planned_base_dir
from serve.config.deployment import DEPLOYMENT, DeploymentConfig, is_local_path
from serve.config.yaml_file import ConfigError, invalid_message
from serve.model.gemma3 import gemma3_pitfall
from serve.model.presets import PRESETS
from serve.model.shapes import SHAPES_DIR, ShapeError, read_shape_file
from serve.process import LaunchError

# peft key of one LoRA matrix of a decoder layer's linear module.
LORA_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])\.weight$")


class PreflightError(ConfigError, LaunchError):
    """A config whose files are not usable here: a ConfigError to the CLIs (exit 2, as a
    bad file), and a LaunchError to whatever starts a server (the start failed)."""


def preflight(
    cfg: DeploymentConfig, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> None:
    """Raise PreflightError (a ConfigError) naming `source` (the config file) and every
    problem the files `cfg` names have on this machine; nothing is built or started. With
    `environ` (that of the server about to start), also a port open without a key."""
    found = [] if environ is None else open_port_problems(cfg, environ)
    found += problems(cfg)
    if found:
        lines = [("(top level)", p) for p in found]
        raise PreflightError(invalid_message(source, DEPLOYMENT, lines))


def open_port_problems(cfg: DeploymentConfig, environ: Mapping[str, str]) -> list[str]:
    """A non-loopback `host` with no key source in `environ` or the config (pure)."""
    keyed = bool(environ.get(cfg.api_key_env)) or cfg.auth.keys_file is not None
    if keyed or cfg.allow_unauthenticated or is_loopback(cfg.host):
        return []
    return [
        f"host: {cfg.host} is reachable from other machines and no key is set: set "
        f"${cfg.api_key_env} (api_key_env) or auth.keys_file, or allow_unauthenticated: "
        "true to serve anyone on purpose"
    ]


def keys_file_problems(cfg: DeploymentConfig) -> list[str]:
    """A keys file that is missing, readable by others or malformed."""
    if cfg.auth.keys_file is None:
        return []
    try:
        read_keys_file(cfg.auth.keys_file.expanduser())
    except KeysFileError as exc:
        return [f"auth.keys_file: {exc}"]
    return []


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def problems(cfg: DeploymentConfig) -> list[str]:
    """One line per file-system problem of `cfg` (empty: it can start here)."""
    found = keys_file_problems(cfg)
    for name in ("ssl_certfile", "ssl_keyfile"):
        path = getattr(cfg, name)
        if path is not None and not path.expanduser().is_file():
            found.append(f"{name}: {str(path)!r} is not a file")
    local = cfg.allowed_local_media_path
    if local is not None and not local.expanduser().is_dir():
        found.append(f"allowed_local_media_path: {str(local)!r} is not a folder")
    if cfg.model is not None and is_local_path(cfg.model):
        found += model_folder_problems(cfg)
    found += adapter_problems(cfg)
    return found


def model_folder_problems(cfg: DeploymentConfig) -> list[str]:
    """A local model folder: it exists, has a config.json, and walks into no Gemma 3
    pitfall by what that config.json says."""
    assert cfg.model is not None
    path = Path(cfg.model).expanduser()
    if not path.is_dir():
        return [f"model: local path {cfg.model!r} does not exist or is not a folder"]
    if not (path / "config.json").is_file():
        return [f"model: {cfg.model!r} has no config.json; is it a model folder?"]
    try:
        hf_config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        hf_config = None
    problem = gemma3_pitfall(
        cfg.dtype,
        cfg.max_model_len,
        cfg.mm_processor_kwargs,
        cfg.model,
        hf_config if isinstance(hf_config, dict) else None,
    )
    return [problem] if problem else []


def adapter_problems(cfg: DeploymentConfig) -> list[str]:
    """Each adapter given as a string: a local folder must be an adapter that fits the
    base; a hub adapter cannot fit the stand-in."""
    if cfg.lora is None:
        return []
    found = []
    for name, source in cfg.lora.adapters.items():
        where = f"lora.adapters.{name}"
        if not isinstance(source, str):
            continue
        if is_local_path(source):
            problem = local_adapter_problem(Path(source).expanduser(), cfg)
            if problem:
                found.append(f"{where}: {problem}")
        elif cfg.stand_in is not None:
            found.append(
                f"{where}: hub adapter {source!r} cannot fit the random-weight stand-in "
                "(and nothing is downloaded for it); use a local folder or {stand_in: ...}"
            )
    return found


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
    known without a download (a hub model without shape data in serve/model/hub_configs,
    a local folder without a readable config.json). A stand-in's come from its preset
    (nothing is built)."""
    if cfg.stand_in is not None:
        p = PRESETS[cfg.stand_in.preset]
        dims = module_dims(
            p.text_hidden, p.text_intermediate, p.text_heads, p.text_kv_heads, p.head_dim
        )
        return dims, p.text_layers
    assert cfg.model is not None
    if is_local_path(cfg.model):
        path, name = Path(cfg.model).expanduser() / "config.json", Path(cfg.model).name
    else:
        name = cfg.model.split("/", 1)[-1]
        path = SHAPES_DIR / f"{name}.json"
    try:
        s = read_shape_file(path, name)
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
    """Why a peft adapter cannot be served on this deployment (None: it can; pure).
    Checks the rank against `max_rank`, then that it was built for this base model: by
    the shapes of its matrices against the base's modules where these are known (a base
    named differently but of the same architecture passes), else by the base's name."""
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


def local_adapter_problem(folder: Path, cfg: DeploymentConfig) -> str | None:
    """Why `folder` is not a peft LoRA adapter this deployment can serve (one line), or
    None. Reads its adapter_config.json and its safetensors header."""
    assert cfg.lora is not None
    if not folder.is_dir():
        return f"local path {str(folder)!r} does not exist or is not a folder"
    config_file = folder / "adapter_config.json"
    weights = folder / "adapter_model.safetensors"
    if not config_file.is_file():
        return f"{str(folder)!r} has no adapter_config.json; is it a peft adapter folder?"
    try:
        adapter_config = json.loads(config_file.read_text())
        shapes = safetensors_shapes(weights) if weights.is_file() else {}
    except (OSError, ValueError, struct.error) as exc:
        return f"cannot read the adapter in {str(folder)!r} ({exc})"
    if not isinstance(adapter_config, dict):
        return f"{config_file} is not a JSON object"
    return adapter_problem(
        adapter_config,
        shapes,
        max_rank=cfg.lora.max_rank,
        deployment_model=cfg.model or planned_base_dir(cfg),
        base=base_layout(cfg),
    )
