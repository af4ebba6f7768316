"""What `python -m serve` prints on stdout once the deployment is ready (pure).

One server and replicas behind vllm-router print the same banner: how long the start
took, the base URL clients use, the model, notes about the model and the device, where
the API key comes from, the service keys and the audit trail; then what is particular to
each (the restart policy of one server; the replicas' ports, the router and the rolling
restart of replicas). Tests and
operators read it: `base URL: <root>/v1` is the line the tests' launcher waits for.
"""

from __future__ import annotations

from pathlib import Path

from serve.command.replicas import ports
from serve.config.deployment import DeploymentConfig
from serve.host import image_attention_notice
from serve.standin.tiny_model import RANDOM_WEIGHTS_NOTICE


def ready_banner(
    cfg: DeploymentConfig,
    *,
    ready_s: float,
    root_url: str,
    keyed: bool,
    image_mask: bool,
    audit: Path | None = None,
) -> str:
    """The lines printed once `cfg` is ready after `ready_s` seconds, answering at
    `root_url` (the server's or, with `replicas:`, the router's); `keyed`: whether the
    server requires the API key from `cfg.api_key_env`; `image_mask`: whether vLLM runs the
    image-mask plugin (serve.attention.support.image_mask_active); `audit`: the audit
    trail's file."""
    lines = [
        f"ready in {ready_s:.0f} s",
        f"base URL: {root_url}/v1",
        f"model:    {cfg.model_name}",
    ]
    if cfg.replicas is not None:
        p = ports(cfg)
        lines.append(f"replicas: {len(p.replicas)} on ports {', '.join(map(str, p.replicas))}")
        lines.append(
            f"router:   vllm-router on 127.0.0.1:{p.router}, policy {cfg.router.policy}, "
            f"metrics on port {p.metrics}"
        )
        lines.append(
            f"edge:     nginx on port {p.edge}: the API and probes only (the router's "
            "management routes answer 404); the replicas take only its internal key"
        )
    if cfg.stand_in is not None:
        lines.append(f"note:     {RANDOM_WEIGHTS_NOTICE}")
    if notice := image_attention_notice(cfg.device, cfg.limit_mm_per_prompt, image_mask):
        lines.append(f"note:     {notice}")
    if keyed:
        lines.append(f"auth:     API key required (from ${cfg.api_key_env})")
    if cfg.auth.keys_file is not None:
        lines.append(f"auth:     service keys from {cfg.auth.keys_file} (python -m serve keys)")
    if audit is not None:
        lines.append(f"audit:    {audit}")
    if cfg.replicas is not None:
        lines.append("rollout:  SIGHUP restarts the replicas one at a time with the re-read config")
    elif cfg.restart.enabled:
        lines.append(f"restart:  up to {cfg.restart.max_restarts} times if the server dies")
    return "\n".join(lines)
