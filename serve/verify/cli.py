"""`python -m serve verify`: send the fixed prompts to a running server and check that its
greedy answers equal transformers' on the same weights.

python -m serve verify --config configs/deployments/cpu-verify.yaml [--base-url URL]
    [--model NAME] [--reference-model DIR] [--set k=v] [--top-k 5] [--max-tokens 16]
    [--tolerance X] [--image-attention bidirectional|causal]

Prints one line per prompt and `fidelity: N/M prompts match`; exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from serve.config.deployment import ConfigError, DeploymentConfig, is_local_path, load_config
from serve.config.yaml_file import source_name

DEFAULT_TOP_K = 5
DEFAULT_MAX_TOKENS = 16
# Allowed |dlogprob| by the dtype both sides run in (measured on the stand-in: docs/fidelity.md).
DEFAULT_TOLERANCE = {"float32": 0.05, "bfloat16": 1.0, "float16": 1.0}


class VerifyError(Exception):
    """Bad input: one `error:` line."""


@dataclass(frozen=True)
class Target:
    """What verify compares: the server (URL, key, model name) and the reference weights."""

    base_url: str
    api_key: str
    model: str
    folder: Path
    dtype: str
    device: str
    adapter: Path | None = None
    image_limit: int | None = None  # the config's images per prompt (None: not set)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serve verify",
        description="Check that a running server's greedy answers (tokens and top-k "
        "log-probabilities) equal transformers' on the same weights and chat template.",
    )
    p.add_argument("--config", type=Path, help="deployment YAML the server runs")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the same config overrides the server was started with (e.g. dtype=bfloat16)",
    )
    p.add_argument(
        "--base-url",
        help="the server's OpenAI base URL (default: the config's "
        "host and port, http://HOST:PORT/v1)",
    )
    p.add_argument(
        "--model",
        help="served model name to verify (default: the config's); a name from the config's "
        "`lora.adapters` verifies that adapter against transformers + peft on it",
    )
    p.add_argument(
        "--reference-model",
        type=Path,
        metavar="DIR",
        help="local folder of the weights for transformers (default: the folder the config "
        "loads; a hub id is looked up in the local Hugging Face cache only, at the config's "
        "`revision` when it pins one)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        help=f"log-probabilities per step (default {DEFAULT_TOP_K})",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help=f"tokens generated per prompt (default {DEFAULT_MAX_TOKENS})",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        help="largest allowed |dlogprob| (default by dtype: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_TOLERANCE.items())
        + ")",
    )
    p.add_argument(
        "--image-attention",
        choices=("bidirectional", "causal"),
        default="bidirectional",
        help="how the reference's image tokens attend to each other: bidirectional within "
        "an image (Gemma 3's mask, the default) or causal",
    )
    return p


def hub_folder(model_id: str, revision: str | None = None) -> Path:
    """The local Hugging Face cache's copy of a hub model (nothing is downloaded): the
    config's pinned `revision` (the commit the server loads), else what `main` points to."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        at = f" at revision {revision}" if revision else ""
        raise VerifyError(
            f"{model_id}{at} is not in the local Hugging Face cache; pass --reference-model "
            "DIR with a local copy of the weights"
        ) from None


def reference_folder(cfg: DeploymentConfig, given: Path | None) -> Path:
    """The folder transformers loads: --reference-model, else the one the server loads."""
    if given is not None:
        folder = given.expanduser()
    elif cfg.stand_in is not None:
        from serve.standin import tiny_model

        folder = tiny_model.ensure(cfg.stand_in.preset, cfg.stand_in.seed)
    elif cfg.model is not None and is_local_path(cfg.model):
        folder = Path(cfg.model).expanduser()
    elif cfg.model is not None:
        folder = hub_folder(cfg.model, cfg.revision)
    else:
        raise VerifyError("the config names no model and no stand_in")
    if not folder.is_dir():
        raise VerifyError(f"reference model folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise VerifyError(f"reference model folder {folder} has no config.json")
    return folder


def adapter_folder(cfg: DeploymentConfig, name: str) -> Path | None:
    """The LoRA adapter folder the reference applies for served name `name` (None: the base)."""
    if cfg.lora is None or name not in cfg.lora.adapters:
        return None
    from serve.launch.lora import adapter_paths

    source = adapter_paths(cfg)[name]
    folder = Path(source).expanduser()
    if not folder.is_dir():
        folder = hub_folder(source)
    if not (folder / "adapter_config.json").is_file():
        raise VerifyError(f"adapter folder {folder} of {name} has no adapter_config.json")
    return folder


def reference_dtype(cfg: DeploymentConfig) -> str:
    """The dtype the server runs in, which the reference runs in too."""
    from serve.host import host_cpu, resolved_dtype

    dtype = resolved_dtype(cfg.dtype, cfg.device, host_cpu()["flags"])
    return "bfloat16" if dtype == "auto" else dtype  # vLLM's auto for Gemma 3: its bf16


def server_url(cfg: DeploymentConfig, given: str | None) -> str:
    """The OpenAI base URL (…/v1): --base-url, else the config's host and port."""
    from serve.process import client_host

    if given:
        url = given.rstrip("/")
        return url if url.endswith("/v1") else f"{url}/v1"
    scheme = "https" if cfg.ssl_certfile else "http"
    return f"{scheme}://{client_host(cfg.host)}:{cfg.port}/v1"


def resolve(args: argparse.Namespace) -> Target:
    """Config + flags -> Target. Raises VerifyError or ConfigError."""
    from serve.launch.preflight import preflight

    cfg = load_config(args.config, list(args.set))
    preflight(cfg, source_name(args.config))
    for name in ("top_k", "max_tokens"):
        if getattr(args, name) < 1:
            raise VerifyError(f"--{name.replace('_', '-')} must be at least 1")
    if args.tolerance is not None and args.tolerance < 0:
        raise VerifyError("--tolerance must not be negative")
    device = "cpu"
    if cfg.device == "cuda":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = args.model or cfg.model_name
    return Target(
        base_url=server_url(cfg, args.base_url),
        api_key=os.environ.get(cfg.api_key_env) or "EMPTY",
        model=model,
        folder=reference_folder(cfg, args.reference_model),
        dtype=reference_dtype(cfg),
        device=device,
        adapter=adapter_folder(cfg, model),
        image_limit=cfg.limit_mm_per_prompt.get("image"),
    )


def run(args: argparse.Namespace, target: Target) -> int:
    """Check the served model, then ask both sides every prompt and print the comparison."""
    from serve.verify import reference, served
    from serve.verify.compare import compare, summary
    from serve.verify.prompts import fixed_prompts

    api = served.client(target.base_url, target.api_key)
    names = served.served_models(api)
    if target.model not in names:
        raise VerifyError(f"the server at {target.base_url} serves {names}, not {target.model}")
    tolerance = args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE[target.dtype]
    with_adapter = f" + peft adapter {target.adapter}" if target.adapter else ""
    print(
        f"verify: {target.model} at {target.base_url} against transformers on {target.folder}"
        f"{with_adapter} ({target.dtype}, {target.device}, "
        f"image attention {args.image_attention}); greedy, "
        f"{args.max_tokens} tokens, top-{args.top_k} logprobs, tolerance {tolerance:g}",
        flush=True,
    )
    ref = reference.load(target.folder, target.dtype, target.device, adapter_dir=target.adapter)
    results = []
    for prompt in fixed_prompts(target.image_limit):
        got = served.generate(
            api, target.model, prompt.messages, max_tokens=args.max_tokens, top_k=args.top_k
        )
        want = reference.generate(
            ref,
            prompt.messages,
            max_tokens=args.max_tokens,
            top_k=args.top_k,
            image_attention=args.image_attention,
        )
        results.append(compare(prompt.name, got, want, tolerance=tolerance))
        print(results[-1].line(), flush=True)
    print(summary(results))
    return 0 if all(r.passed for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from serve.verify.reference import ReferenceError
    from serve.verify.served import ServedError

    try:
        return run(args, resolve(args))
    except (VerifyError, ConfigError, ServedError, ReferenceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
