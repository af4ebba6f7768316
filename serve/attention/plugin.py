"""The vLLM general plugin `medgemma_cpu_image_mask` (pyproject.toml's entry point in
`vllm.general_plugins`), which vLLM runs in its API server, engine core and workers.

On the CPU platform and a vLLM it was written for (serve.attention.support.WRITTEN_FOR) it
registers serve.attention.backend.ImageMaskAttentionBackend in place of CPU_ATTN through
vLLM's own `register_backend` (vLLM's CpuPlatform returns CPU_ATTN's path for every decoder
attention layer, so nothing else changes). On a GPU it does nothing; on another vLLM
version it logs one line and keeps vLLM's backend. Imports no other serve module but
serve.attention.support.
"""

from __future__ import annotations

import logging
import os

from serve.attention.support import WRITTEN_FOR, unsupported_line

BACKEND_CLASS = "serve.attention.backend.ImageMaskAttentionBackend"
# Set once a process has said its line: vLLM's engine core and workers are its children
# and inherit it, so a start says it once, not once per process.
SAID = "MEDGEMMA_IMAGE_MASK_SAID"


def say_once(logger: logging.Logger, level: int, line: str) -> None:
    """Log `line` unless a parent process of this one already did."""
    if os.environ.get(SAID) != "1":
        logger.log(level, line)
        os.environ[SAID] = "1"


def register() -> None:
    """vLLM's entry point: install the image-mask backend on the CPU platform."""
    import vllm
    from vllm.logger import init_logger
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    logger = init_logger("vllm.plugins.medgemma_image_mask")
    if vllm.__version__ not in WRITTEN_FOR:
        say_once(logger, logging.WARNING, unsupported_line(vllm.__version__))
        return
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    # The backend's builder says so in vLLM's log once a model with images uses it.
    register_backend(AttentionBackendEnum.CPU_ATTN, BACKEND_CLASS)
