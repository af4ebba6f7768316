"""The ready banner `python -m serve` prints (serve.launch.banner), for one server and for
replicas behind vllm-router: one pure function, so both print the same lines."""

from __future__ import annotations

from serve.config.deployment import load_config
from serve.host import IMAGE_ATTENTION_NOTICE
from serve.launch.banner import ready_banner
from serve.standin.tiny_model import RANDOM_WEIGHTS_NOTICE
from tests.conftest import CONFIGS


def test_one_server() -> None:
    cfg = load_config(CONFIGS / "cpu-tiny.yaml", ["restart.enabled=true"])
    lines = ready_banner(
        cfg, ready_s=41.6, root_url="https://127.0.0.1:8000", keyed=True, image_mask=False
    ).splitlines()
    assert lines[:3] == [
        "ready in 42 s",
        "base URL: https://127.0.0.1:8000/v1",
        f"model:    {cfg.model_name}",
    ], lines
    assert f"note:     {RANDOM_WEIGHTS_NOTICE}" in lines, lines
    assert f"note:     {IMAGE_ATTENTION_NOTICE}" in lines, lines
    with_mask = ready_banner(
        cfg, ready_s=41.6, root_url="https://127.0.0.1:8000", keyed=True, image_mask=True
    )
    assert IMAGE_ATTENTION_NOTICE not in with_mask, "the image-mask plugin runs: no note"
    assert f"auth:     API key required (from ${cfg.api_key_env})" in lines, lines
    assert lines[-1] == f"restart:  up to {cfg.restart.max_restarts} times if the server dies"
    assert not any(ln.startswith(("replicas:", "router:", "rollout:")) for ln in lines), lines


def test_one_server_without_key_restart_or_images() -> None:
    cfg = load_config(
        CONFIGS / "cpu-tiny.yaml",
        ["restart.enabled=false", "limit_mm_per_prompt={image: 0}"],
    )
    text = ready_banner(
        cfg, ready_s=3, root_url="http://127.0.0.1:8000", keyed=False, image_mask=False
    )
    assert "auth:" not in text and "restart:" not in text, text
    assert IMAGE_ATTENTION_NOTICE not in text, text


def test_replicas_behind_the_router() -> None:
    cfg = load_config(CONFIGS / "cpu-tiny-2replicas.yaml", ["port=9000"])
    lines = ready_banner(
        cfg, ready_s=95, root_url="http://127.0.0.1:9000", keyed=True, image_mask=True
    )
    assert lines.splitlines()[:6] == [
        "ready in 95 s",
        "base URL: http://127.0.0.1:9000/v1",
        f"model:    {cfg.model_name}",
        "replicas: 2 on ports 9001, 9002",
        f"router:   vllm-router on 127.0.0.1:9004, policy {cfg.router.policy}, metrics on "
        "port 9003",
        "edge:     nginx on port 9000: the API and probes only (the router's management "
        "routes answer 404); the replicas take only its internal key",
    ], lines
    assert lines.splitlines()[-1] == (
        "rollout:  SIGHUP restarts the replicas one at a time with the re-read config"
    )
    assert "restart:" not in lines, "a replica's restarts are the fleet's, not one server's"


def test_service_keys_and_the_audit_trail_are_named() -> None:
    from pathlib import Path

    cfg = load_config(CONFIGS / "cpu-tiny.yaml", ["auth.keys_file=/etc/medgemma/keys.json"])
    audit = Path("logs/audit-8000.jsonl")
    lines = ready_banner(
        cfg,
        ready_s=1,
        root_url="http://127.0.0.1:8000",
        keyed=False,
        image_mask=True,
        audit=audit,
    ).splitlines()
    assert "auth:     service keys from /etc/medgemma/keys.json (python -m serve keys)" in lines
    assert "audit:    logs/audit-8000.jsonl" in lines, lines
