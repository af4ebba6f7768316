"""The CPU image-attention notice the launcher prints (docs/fidelity.md): only where images
go through vLLM's CPU backend without the image-mask plugin (serve/attention)."""

from __future__ import annotations

import pytest

from serve.attention.support import PLUGIN_NAME, WRITTEN_FOR, mask_active
from serve.host import IMAGE_ATTENTION_NOTICE, image_attention_notice


@pytest.mark.parametrize(
    ("device", "limits", "image_mask", "printed"),
    [
        ("cpu", {"image": 2}, False, True),
        ("cpu", {"image": 2}, True, False),
        ("cpu", {"image": 0}, False, False),
        ("cpu", {}, False, False),
        ("cuda", {"image": 2}, False, False),
    ],
)
def test_notice_only_for_images_on_the_cpu_without_the_mask(
    device: str, limits: dict[str, int], image_mask: bool, printed: bool
) -> None:
    expected = IMAGE_ATTENTION_NOTICE if printed else None
    assert image_attention_notice(device, limits, image_mask) == expected


@pytest.mark.parametrize(
    ("version", "installed", "plugins", "active"),
    [
        (WRITTEN_FOR[0], True, None, True),
        (WRITTEN_FOR[0], True, f"other,{PLUGIN_NAME}", True),
        ("0.33.0", True, None, False),  # a vLLM the plugin was not written for: the note is back
        (None, True, None, False),  # no vLLM installed
        (WRITTEN_FOR[0], False, None, False),  # an install without the entry point
        (WRITTEN_FOR[0], True, "other", False),  # left out by VLLM_PLUGINS
    ],
)
def test_the_mask_is_active_only_where_vllm_runs_it(
    version: str | None, installed: bool, plugins: str | None, active: bool
) -> None:
    assert mask_active(version, installed, plugins) is active
