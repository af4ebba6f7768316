"""The vLLM general plugin (serve.attention.plugin) in this process: on the vLLM it was
written for, vLLM's CPU_ATTN resolves to the image-mask backend; on another, vLLM's own
backend stays and one line says why, however many of vLLM's processes load the plugin."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

pytest.importorskip("vllm.v1.attention.backends.cpu_attn")

import vllm  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402
from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend  # noqa: E402
from vllm.v1.attention.backends.registry import (  # noqa: E402
    AttentionBackendEnum,
    register_backend,
)

from serve.attention.plugin import SAID, register  # noqa: E402
from serve.attention.support import WRITTEN_FOR  # noqa: E402

if not current_platform.is_cpu():  # pragma: no cover - a CUDA build of vLLM
    pytest.skip("the plugin acts on the CPU platform only", allow_module_level=True)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The plugin's log lines; vLLM's registry and the one-line marker restored after."""
    monkeypatch.setenv(SAID, "0")  # as in a fresh API server process
    # An earlier test may have loaded vLLM's general plugins in this process (this one
    # among them); start from vLLM's own registry, as a fresh process does, and put the
    # earlier state back after.
    cpu_attn = AttentionBackendEnum.CPU_ATTN
    earlier = cpu_attn.get_path() if cpu_attn.is_overridden() else None
    cpu_attn.clear_override()
    logger = logging.getLogger("vllm.plugins.medgemma_image_mask")
    handler, level, disabled = Lines(), logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    # An earlier test's logging.config (vLLM's own, disable_existing_loggers) may have
    # disabled the logger in this process; a fresh vLLM process has it enabled.
    logger.disabled = False
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled
        cpu_attn.clear_override()
        if earlier is not None:
            register_backend(cpu_attn, earlier)


def test_cpu_attn_becomes_the_image_mask_backend(said: list[str]) -> None:
    assert vllm.__version__ in WRITTEN_FOR, vllm.__version__
    register()
    backend = AttentionBackendEnum.CPU_ATTN.get_class()
    assert issubclass(backend, CPUAttentionBackend) and backend is not CPUAttentionBackend
    assert backend.supports_mm_prefix() and backend.get_name() == "CPU_ATTN"
    assert said == [], said  # the backend's builder says it, once vLLM's logging is set up


def test_another_vllm_keeps_its_backend_and_says_so_once(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm, "__version__", "0.99.0")
    register()
    register()  # what an engine core started by that API server does: nothing more said
    assert not AttentionBackendEnum.CPU_ATTN.is_overridden()
    assert AttentionBackendEnum.CPU_ATTN.get_class() is CPUAttentionBackend
    assert len(said) == 1 and said[0].startswith(
        "medgemma-serve image mask: not written for vLLM 0.99.0"
    ), said
