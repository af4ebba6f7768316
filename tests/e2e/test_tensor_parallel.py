"""configs/deployments/cpu-tiny-tp2.yaml: tensor parallel 2 on the CPU, the multi-GPU code path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serve.config.deployment import load_config
from serve.process import free_port
from tests.conftest import CONFIGS, LOG_DIR
from tests.e2e.launcher import serving
from tests.images import data_url


@pytest.mark.slow
@pytest.mark.all_cores
def test_tp2_config_serves_image_and_text(tiny_model_dir: Path) -> None:
    cfg = load_config(
        CONFIGS / "cpu-tiny-tp2.yaml", {"model": str(tiny_model_dir), "port": free_port()}
    )
    assert cfg.tensor_parallel_size == 2
    environ = {k: v for k, v in os.environ.items() if k != cfg.api_key_env}
    with serving(cfg, LOG_DIR / f"pytest-tp2-{cfg.port}.log", environ) as srv:
        reply = srv.get_client().chat.completions.create(
            model=srv.model,
            messages=[
                {"role": "system", "content": "You are an expert radiologist."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe this X-ray"},
                        {"type": "image_url", "image_url": {"url": data_url()}},
                    ],
                },
            ],
            max_tokens=8,
            temperature=0,
        )
        assert reply.usage is not None and reply.usage.prompt_tokens > 256, reply.usage
        assert reply.usage.completion_tokens == 8, reply.usage
        log = srv.text()
        assert "world_size=2" in log or "tensor_parallel_size=2" in log, "TP=2 not in the log"
